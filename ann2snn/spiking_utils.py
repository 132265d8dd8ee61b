"""NumPy spiking layers whose neurons send positive and negative spikes.

Conversion. A hidden channel of the quantized ANN computes, in units of 1/2^k,

    n = round(2^k * ReLU(gamma * (z - mu) / sigma + beta))       (ties round up)

with z the convolution output and sigma = sqrt(var + eps). Its spiking neuron
integrates the signed spikes of the layer below through the same weights
(the first layer instead receives the image times 2^k once, at the first time
step), so its membrane V equals 2^k * z for the input counts received so far.
Every time step the neuron compares the count of spikes it has sent (positive
minus negative) with what its membrane calls for,

    target = max(0, floor((sign(gamma) * V - offset) / threshold)),
    threshold = sigma / |gamma|   (membrane units per output spike),

and sends one +1 spike if its count is below the target or one -1 spike if it
is above. The offset folds mu, beta and the half step of rounding. Channels
with gamma < 0 use the flipped membrane; channels with gamma = 0 ignore their
input and move to the constant count round(2^k * ReLU(beta)).

Contract: once the inputs of a neuron stop changing, its net spike count
reaches the ANN's n after at most |n - count| more time steps, and then stays.
The NumPy ANN of `quantized_ann` applies the same `target_counts` to the same
float64 membranes, so the two agree exactly when both membranes are equal.
NOTE: the membrane adds one float64 convolution of the spikes per time step,
while the ANN makes one convolution of the final counts. The two sums are
exact, hence equal, unless the weights span more than about 20 binary orders
of magnitude within one neuron's inputs; `--verify` checks every neuron.

The output layer does not spike: its potential is W_out times the net spike
counts of the last hidden layer, and the prediction is its argmax.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Added before rounding in the quantizer, so that ties round up (see tf_model.quantize).
QUANTIZER_OFFSET = 1e-5


@dataclass
class NeuronParameters:
    """Per-channel parameters of the spiking neurons of one hidden layer (float64 arrays)."""

    sign: np.ndarray            # sign of gamma: +1, -1, or 0 for a constant channel
    threshold: np.ndarray       # membrane units per spike, sigma / |gamma|
    offset: np.ndarray          # membrane value of the ANN's first rounding step, minus one threshold
    constant_count: np.ndarray  # count of gamma = 0 channels, round(2^k * ReLU(beta))

    @classmethod
    def from_batch_norm(cls, beta, gamma, moving_mean, moving_variance, epsilon, k):
        """Derive the neurons of a channel from its batch norm at quantization level `k`."""
        beta, gamma, mean, variance = (np.asarray(a, dtype=np.float64)
                                       for a in (beta, gamma, moving_mean, moving_variance))
        scale = 2.0 ** k
        sigma = np.sqrt(variance + epsilon)
        sign = np.sign(gamma)
        constant = sign == 0
        threshold = np.where(constant, 1.0, sigma / np.where(constant, 1.0, np.abs(gamma)))
        # In membrane units (2^k * z), 2^k * BN(z) = (sign * V - shift) / threshold, with:
        shift = sign * scale * mean - scale * beta * threshold
        offset = shift - (0.5 + QUANTIZER_OFFSET) * threshold
        constant_count = np.maximum(0.0, np.floor(scale * beta + 0.5 + QUANTIZER_OFFSET))
        return cls(sign=sign, threshold=threshold, offset=np.where(constant, 0.0, offset),
                   constant_count=np.where(constant, constant_count, 0.0))

    def target_counts(self, membrane):
        """Return the net spike count each neuron's membrane calls for (float64, integer values).

        `membrane` is 2^k * z with the channel as the last axis and gamma's sign not
        yet applied. This is the quantized ANN's activation in units of 1/2^k.
        """
        counts = np.floor((self.sign * membrane - self.offset) / self.threshold)
        np.maximum(counts, 0.0, out=counts)
        return np.where(self.sign == 0, self.constant_count, counts)


def conv2d_valid(inputs, weights, stride=1):
    """Return the VALID convolution of `inputs` (N, H, W, C) with `weights` (kh, kw, C, O)."""
    batch, height, width, channels = inputs.shape
    kh, kw, _, out_channels = weights.shape
    if kh == height and kw == width:
        flat = inputs.reshape(batch, height * width * channels)
        return (flat @ weights.reshape(-1, out_channels)).reshape(batch, 1, 1, out_channels)
    windows = sliding_window_view(inputs, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    # windows: (N, H', W', C, kh, kw); contract over C, kh, kw.
    return np.tensordot(windows, weights.transpose(2, 0, 1, 3), axes=([3, 4, 5], [0, 1, 2]))


def fan_out_map(in_height, in_width, kernel_size, stride, out_channels):
    """Return, per input position (H, W), how many neurons of the next layer it reaches."""

    def covering_windows(size):
        out_size = (size - kernel_size) // stride + 1
        counts = np.zeros(size, dtype=np.int64)
        for start in range(0, out_size * stride, stride):
            counts[start:start + kernel_size] += 1
        return counts

    return np.outer(covering_windows(in_height), covering_windows(in_width)) * out_channels


class SpikingConv2d:
    """A hidden layer of spiking neurons fed by a VALID convolution.

    State per image: `membrane` (2^k * z for the inputs received so far) and
    `spike_count` (net spikes sent, positive minus negative).
    """

    def __init__(self, weights, stride, neurons, input_shape):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.stride = stride
        self.neurons = neurons
        self.input_shape = tuple(input_shape)
        kh = self.weights.shape[0]
        height, width, _ = self.input_shape
        self.output_shape = ((height - kh) // stride + 1, (width - kh) // stride + 1,
                             self.weights.shape[3])
        # SOPs of one incoming spike at each input position: the neurons it reaches.
        self.input_fan_out = fan_out_map(height, width, kh, stride, self.weights.shape[3])
        self.membrane = None
        self.spike_count = None

    def reset(self, batch_size):
        self.membrane = np.zeros((batch_size, *self.output_shape))
        self.spike_count = np.zeros((batch_size, *self.output_shape))

    def step(self, inputs):
        """Integrate `inputs` (signed spikes, or the scaled image) and return this step's spikes."""
        if inputs.any():
            self.membrane += conv2d_valid(inputs, self.weights, self.stride)
        spikes = np.sign(self.neurons.target_counts(self.membrane) - self.spike_count)
        self.spike_count += spikes
        return spikes


class SpikingOutput:
    """The dense output layer: integrates spikes into a potential, never spikes."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.input_fan_out = self.weights.shape[1]
        self.potential = None

    def reset(self, batch_size):
        self.potential = np.zeros((batch_size, self.weights.shape[1]))

    def step(self, spikes):
        if spikes.any():
            self.potential += spikes.reshape(len(spikes), -1) @ self.weights
        return self.potential


def neurons_of(arch, params, k, epsilon):
    """Return the NeuronParameters of every hidden layer of `arch` from npz-ordered `params`."""
    neurons = []
    for index in range(len(arch.hidden)):
        _, beta, gamma, mean, variance = params[5 * index:5 * index + 5]
        neurons.append(NeuronParameters.from_batch_norm(beta, gamma, mean, variance, epsilon, k))
    return neurons


class SpikingNetwork:
    """The spiking network of a quantized model: hidden SpikingConv2d layers, then the output.

    `step` advances every layer by one time step, in order, so a spike sent by
    layer l at step t reaches layer l+1 in the same step.
    """

    def __init__(self, arch, params, k, epsilon):
        self.arch = arch
        self.k = k
        self.layers = []
        for layer, (in_shape, _), neurons, index in zip(
                arch.hidden, arch.layer_shapes(), neurons_of(arch, params, k, epsilon),
                range(len(arch.hidden))):
            self.layers.append(SpikingConv2d(params[5 * index], layer.stride, neurons, in_shape))
        self.output = SpikingOutput(params[-1])

    def reset(self, batch_size):
        for layer in self.layers:
            layer.reset(batch_size)
        self.output.reset(batch_size)

    def step(self, images, time_step):
        """Run time step `time_step` (0-based); return (potential, spikes, sops) of this step.

        `images` (N, 28, 28, 1) in [0, 1) enter the first layer, times 2^k, at step 0.
        `spikes` is (spikes of either sign, net spikes) over all hidden neurons;
        `sops` counts every spike times its fan-out, except those into the first layer.
        """
        if time_step == 0:
            inputs = images.astype(np.float64) * 2.0 ** self.k
        else:
            inputs = np.zeros((len(images), *self.arch.input_shape))
        spikes_total = net_total = sops = 0
        for index, layer in enumerate(self.layers):
            if index > 0:
                sops += _synaptic_operations(inputs, layer.input_fan_out)
            inputs = layer.step(inputs)
            spikes_total += int(np.count_nonzero(inputs))
            net_total += int(inputs.sum())
        sops += int(np.count_nonzero(inputs)) * self.output.input_fan_out
        potential = self.output.step(inputs)
        return potential, (spikes_total, net_total), sops

    def spike_counts(self):
        """Return the net spike count arrays of the hidden layers (N, H, W, C)."""
        return [layer.spike_count for layer in self.layers]


def _synaptic_operations(spikes, fan_out):
    """Return the SOPs of `spikes` (N, H, W, C): each spike times its fan-out."""
    per_position = np.count_nonzero(spikes, axis=(0, 3))
    return int((per_position * fan_out).sum())
