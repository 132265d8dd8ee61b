"""A plain reference implementation of the spiking simulation, to check and time the project's.

It simulates the same neurons as `ann2snn.spiking_utils` (see that module's
docstring for the neuron model), written as a first implementation would be,
with no shortcuts:

- every hidden layer is an im2col convolution: precomputed index arrays gather
  each input patch by fancy indexing at every time step, and the float64 patch
  matrix is multiplied by the reshaped weights;
- every layer and the output layer are recomputed at every time step, also when
  their input contains no spike.

It shares only the model file, the architecture's shapes and the weight
snapping (`snap_weights`, which defines the network's weights) with the project.
The neuron parameters, the convolution, the spike rule, the fan-out of the
synaptic operation (SOP) count and the logs are all computed here. The neuron
parameters follow the formulas of the `spiking_utils` docstring, in the operation
order of `NeuronParameters.from_batch_norm`, because another order can round a
threshold or offset differently and flip the spike of a membrane that lies next
to a threshold. tests/test_benchmark_reference.py checks that both simulators
write identical logs.
"""

import sys

import numpy as np

from ann2snn.spiking_utils import snap_weights

# The batch-norm epsilon that `simulation.simulate` assumes when the model's metadata has none.
DEFAULT_BN_EPSILON = 1e-5
# Added before rounding by the quantizer of the trained ANN: round(x * 2^k + 1e-5) / 2^k.
QUANTIZER_OFFSET = 1e-5
LOG_NAMES = ("accuracy", "spike_num", "spike_collect", "sop_num")


class ReferenceNeurons:
    """Per-channel spike rule of one hidden layer, derived from its batch norm at level k.

    The ANN's activation in units of 1/2^k is round(2^k * ReLU(gamma * (z - mean) / sigma
    + beta)), ties rounded up, with sigma = sqrt(variance + epsilon). In membrane units
    V = 2^k * z this is max(0, floor((sign(gamma) * V - offset) / threshold)) with the
    threshold sigma / |gamma| and the offset below. A gamma = 0 channel has the constant
    count round(2^k * ReLU(beta)).
    """

    def __init__(self, beta, gamma, mean, variance, epsilon, k):
        beta, gamma, mean, variance = (np.asarray(value, dtype=np.float64)
                                       for value in (beta, gamma, mean, variance))
        scale = 2.0 ** k
        sigma = np.sqrt(variance + epsilon)
        self.sign = np.sign(gamma)
        self.constant = self.sign == 0
        absolute_gamma = np.where(self.constant, 1.0, np.abs(gamma))
        self.threshold = np.where(self.constant, 1.0, sigma / absolute_gamma)
        shift = self.sign * scale * mean - scale * beta * self.threshold
        self.offset = shift - (0.5 + QUANTIZER_OFFSET) * self.threshold
        self.constant_count = np.maximum(0.0, np.floor(scale * beta + 0.5 + QUANTIZER_OFFSET))

    def target_counts(self, membrane):
        """Return the net spike counts that `membrane` (channels last) calls for, as floats."""
        counts = np.floor((self.sign * membrane - self.offset) / self.threshold)
        counts = np.maximum(counts, 0.0)
        return np.where(self.constant, self.constant_count, counts)


def im2col_indices(input_shape, kernel_size, stride):
    """Return the gather indices of a VALID convolution on one flattened (H, W, C) input.

    The result has shape (H' * W', kernel_size * kernel_size * C). Row p lists the
    flat input indices of output position p's window in (row, column, channel)
    order, which is the order of an HWIO kernel reshaped to (kh * kw * C, O).
    """
    height, width, channels = input_shape
    out_height = (height - kernel_size) // stride + 1
    out_width = (width - kernel_size) // stride + 1
    rows = np.arange(out_height)[:, None, None, None, None] * stride \
        + np.arange(kernel_size)[None, None, :, None, None]
    columns = np.arange(out_width)[None, :, None, None, None] * stride \
        + np.arange(kernel_size)[None, None, None, :, None]
    channel = np.arange(channels)[None, None, None, None, :]
    flat = (rows * width + columns) * channels + channel
    return flat.reshape(out_height * out_width, kernel_size * kernel_size * channels)


class ReferenceLayer:
    """A hidden layer: im2col convolution into the membranes, then one spike rule step."""

    def __init__(self, weights, stride, neurons, input_shape):
        kernel_size, _, in_channels, out_channels = np.shape(weights)
        self.indices = im2col_indices(input_shape, kernel_size, stride)
        # The same snapped weights as the project's neurons (exact float64 sums).
        self.weight_matrix = snap_weights(weights).reshape(
            kernel_size * kernel_size * in_channels, out_channels)
        self.neurons = neurons
        self.num_positions = len(self.indices)
        self.out_channels = out_channels
        # SOPs of one incoming spike at each flat input index: the windows that
        # contain it times the output channels.
        input_size = int(np.prod(input_shape))
        self.fan_out = np.bincount(self.indices.ravel(), minlength=input_size) * out_channels
        self.membrane = None
        self.spike_count = None

    def reset(self, batch_size):
        self.membrane = np.zeros((batch_size, self.num_positions, self.out_channels))
        self.spike_count = np.zeros((batch_size, self.num_positions, self.out_channels))

    def step(self, inputs):
        """Integrate `inputs` (N, H * W * C) and return this step's spikes (N, H' * W' * O)."""
        batch_size = len(inputs)
        # (N, H' * W', kh * kw * C), flattened to one matrix so that a single GEMM
        # computes the whole batch. NumPy's stacked matmul of the 3-D array was 9 to
        # 30 times slower for four of LeNet's five layers (NumPy 2.4.6, OpenBLAS 0.3.31).
        patches = inputs[:, self.indices].reshape(batch_size * self.num_positions, -1)
        self.membrane += (patches @ self.weight_matrix).reshape(self.membrane.shape)
        target = self.neurons.target_counts(self.membrane)
        spikes = np.zeros_like(target)
        spikes[target > self.spike_count] = 1.0
        spikes[target < self.spike_count] = -1.0
        self.spike_count += spikes
        return spikes.reshape(len(spikes), -1)


class ReferenceNetwork:
    """The hidden reference layers of an architecture, then the non-spiking output layer."""

    def __init__(self, model):
        arch = model.architecture
        params = model.params
        epsilon = model.metadata.get("bn_epsilon", DEFAULT_BN_EPSILON)
        self.k = model.k
        self.input_size = int(np.prod(arch.input_shape))
        self.layers = []
        for index, (layer, (input_shape, _)) in enumerate(zip(arch.hidden, arch.layer_shapes())):
            weights, beta, gamma, mean, variance = params[5 * index:5 * index + 5]
            neurons = ReferenceNeurons(beta, gamma, mean, variance, epsilon, self.k)
            self.layers.append(ReferenceLayer(weights, layer.stride, neurons, input_shape))
        self.output_weights = snap_weights(params[-1])
        self.output_fan_out = self.output_weights.shape[1]
        self.potential = None

    def reset(self, batch_size):
        for layer in self.layers:
            layer.reset(batch_size)
        self.potential = np.zeros((batch_size, self.output_weights.shape[1]))

    def step(self, images, time_step):
        """Run one time step; return (spikes of either sign, net spikes, SOPs) of this step.

        The first layer receives the images times 2^k at step 0 and zeros afterwards.
        """
        batch_size = len(images)
        if time_step == 0:
            inputs = images.reshape(batch_size, -1).astype(np.float64) * 2.0 ** self.k
        else:
            inputs = np.zeros((batch_size, self.input_size))

        spikes_total = 0
        net_total = 0
        sops = 0
        for index, layer in enumerate(self.layers):
            if index > 0:
                sops += int(((inputs != 0) * layer.fan_out).sum())
            inputs = layer.step(inputs)
            spikes_total += int(np.count_nonzero(inputs))
            net_total += int(inputs.sum())

        sops += int(np.count_nonzero(inputs)) * self.output_fan_out
        self.potential += inputs @ self.output_weights
        return spikes_total, net_total, sops


def simulate_reference(model, images, labels, time_steps, batch_size):
    """Simulate `model` on `images` like `simulation.simulate` and return its four logs.

    The result maps each of LOG_NAMES to an int64 array (num_batches, time_steps):
    correct predictions at each step, then spikes of either sign, net spikes and
    SOPs, each summed from step 0 to that step.
    """
    network = ReferenceNetwork(model)
    num_batches = -(-len(images) // batch_size)
    records = {name: np.zeros((num_batches, time_steps), dtype=np.int64) for name in LOG_NAMES}

    for batch in range(num_batches):
        start = batch * batch_size
        batch_images = images[start:start + batch_size]
        batch_labels = labels[start:start + batch_size]
        network.reset(len(batch_images))
        spikes_so_far = 0
        net_so_far = 0
        sops_so_far = 0
        for time_step in range(time_steps):
            spikes, net, sops = network.step(batch_images, time_step)
            spikes_so_far += spikes
            net_so_far += net
            sops_so_far += sops
            predictions = np.argmax(network.potential, axis=1)
            records["accuracy"][batch, time_step] = np.sum(predictions == batch_labels)
            records["spike_num"][batch, time_step] = spikes_so_far
            records["spike_collect"][batch, time_step] = net_so_far
            records["sop_num"][batch, time_step] = sops_so_far
    return records


if __name__ == "__main__":
    sys.exit("reference_simulator.py is a module, not a script: python "
             "benchmarks/benchmark_simulation.py runs it against the project's simulator "
             "(--help lists its options)")
