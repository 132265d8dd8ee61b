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
The membranes are sums of snapped weights (see `snap_weights`) times integer
counts, which float64 represents exactly, so the order of the additions (per
time step, per layer or per spike) changes nothing.

The output layer does not spike: its potential is W_out times the net spike
counts of the last hidden layer, and the prediction is its argmax.
"""

from dataclasses import dataclass

import numpy as np

# Added before rounding in the quantizer, so that ties round up (see tf_model.quantize).
QUANTIZER_OFFSET = 1e-5


@dataclass
class NeuronParameters:
    """Per-channel parameters of the spiking neurons of one hidden layer (float64 arrays)."""

    sign: np.ndarray       # sign of gamma: +1, -1, or 0 for a constant channel
    threshold: np.ndarray  # membrane units per spike, sigma / |gamma| (1 where gamma = 0)
    offset: np.ndarray     # signed membrane at which the count would reach 0, one threshold below the first rounding step

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
        # A gamma = 0 channel gets zero weights (see `signed`), so its signed membrane
        # stays 0 and this offset makes the target round(2^k * ReLU(beta)).
        constant_count = np.maximum(0.0, np.floor(scale * beta + 0.5 + QUANTIZER_OFFSET))
        offset = np.where(constant, -(constant_count + 0.5), offset)
        return cls(sign=sign, threshold=threshold, offset=offset)

    def signed(self, weights):
        """Return snap_weights(`weights`) times sign(gamma) per output channel, in float64.

        Flipping a sign is exact, so the signed membrane is exactly sign * 2^k * z.
        """
        return snap_weights(weights) * self.sign

    def target_counts(self, signed_membrane):
        """Return the net spike count each neuron's membrane calls for (float64, integer values).

        `signed_membrane` is sign(gamma) * 2^k * z, channels on the last axis. The
        result is the quantized ANN's activation in units of 1/2^k.
        """
        counts = signed_membrane - self.offset
        counts /= self.threshold
        np.floor(counts, out=counts)
        np.maximum(counts, 0.0, out=counts)
        return counts


# Binary digits kept below the largest weight of each output channel (snap_weights).
WEIGHT_GRID_BITS = 28


def snap_weights(weights):
    """Round each output channel's weights (last axis) to a multiple of 2^(e - 28).

    e is the binary exponent of the channel's largest |weight|, so every weight
    becomes an integer below 2^28 times the channel's step. A membrane is then
    an integer number of steps (the inputs are integer counts, or pixels that
    are multiples of 1/256), below 2^53 while the inputs' absolute sum stays
    below 2^24 counts (or 2^16 in first-layer units). Every float64 sum is
    exact, so the result does not depend on the order of the additions: the
    engines, the batch size and the NumPy ANN all agree exactly. The change of
    a weight is at most 2^-28 of the channel's largest, below float32's own
    resolution of 2^-24.
    """
    weights = np.asarray(weights, dtype=np.float64)
    step = np.ldexp(1.0, _largest_exponent(weights) - WEIGHT_GRID_BITS)
    return np.round(weights / step) * step


def _largest_exponent(weights):
    """Return, per output channel (last axis), the binary exponent of the largest |weight|."""
    largest = np.abs(weights.reshape(-1, weights.shape[-1])).max(axis=0)
    _, exponent = np.frexp(largest)
    return exponent


def integer_weights(weights):
    """Split snapped `weights` (kh, kw, C, O) into int32 multiples of a per-channel unit.

    Returns (integers, unit): `integers` laid out (C, kh, kw, O), `unit` (O,) a
    power of two per output channel, with integers * unit == weights exactly.
    The unit is 2^(e - 29), e the binary exponent of the channel's largest
    |weight|: at most the step of snap_weights, so it divides every weight, and
    the integers stay below 2^29 in magnitude.
    """
    weights = np.asarray(weights, dtype=np.float64)
    unit = np.ldexp(1.0, _largest_exponent(weights) - WEIGHT_GRID_BITS - 1)
    scaled = weights / unit
    integers = scaled.astype(np.int32)
    if not np.array_equal(integers, scaled):
        raise ValueError("weights are not snapped: call snap_weights first")
    return np.ascontiguousarray(integers.transpose(2, 0, 1, 3)), unit


def conv2d_valid(inputs, weights, stride=1):
    """Return the VALID convolution of `inputs` (N, H, W, C) with `weights` (kh, kw, C, O)."""
    batch, height, width, channels = inputs.shape
    kh, kw, _, out_channels = weights.shape
    if kh == height and kw == width:
        flat = inputs.reshape(batch, height * width * channels)
        return (flat @ weights.reshape(-1, out_channels)).reshape(batch, 1, 1, out_channels)
    out_h = (height - kh) // stride + 1
    out_w = (width - kw) // stride + 1
    inputs = np.ascontiguousarray(inputs)
    sn, sh, sw, sc = inputs.strides
    # im2col as a strided view (N, H', W', kh, kw, C), in the order of the HWIO kernel.
    patches = np.lib.stride_tricks.as_strided(
        inputs, (batch, out_h, out_w, kh, kw, channels),
        (sn, sh * stride, sw * stride, sh, sw, sc), writeable=False)
    columns = patches.reshape(batch * out_h * out_w, kh * kw * channels)
    return (columns @ weights.reshape(-1, out_channels)).reshape(batch, out_h, out_w, out_channels)


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

    State per image: `membrane` (sign(gamma) * 2^k * z for the inputs received so
    far) and `spike_count` (net spikes sent, positive minus negative).
    """

    def __init__(self, weights, stride, neurons, input_shape):
        self.weights = neurons.signed(weights)
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


    def run_train(self, input_train, totals):
        """Feed a whole input spike train (T, N, H, W, C); return (output train int8, final counts).

        The input spikes are counted into `totals` (a SpikeTotals). Per time step,
        only the images whose membrane changed or whose count has not reached its
        target are updated.
        """
        time_steps, num_images = input_train.shape[:2]
        steps, images, increments = _train_increments(
            input_train, lambda x: conv2d_valid(x, self.weights, self.stride),
            self.input_fan_out, totals)
        step_bounds = np.searchsorted(steps, np.arange(time_steps + 1))
        membrane = np.zeros((num_images, *self.output_shape))
        # Before any input, a neuron already calls for the count of a zero membrane.
        target = self.neurons.target_counts(membrane)
        count = np.zeros((num_images, *self.output_shape))
        pending = np.ones(num_images, dtype=bool)
        output_train = np.zeros((time_steps, num_images, *self.output_shape), dtype=np.int8)
        for time_step in range(time_steps):
            first, last = step_bounds[time_step], step_bounds[time_step + 1]
            changed = images[first:last]
            if len(changed):
                membrane[changed] += increments[first:last]
                target[changed] = self.neurons.target_counts(membrane[changed])
                pending[changed] = True
            rows = np.flatnonzero(pending)
            if not len(rows):
                continue
            difference = target[rows] - count[rows]
            spikes = np.sign(difference)
            count[rows] += spikes
            output_train[time_step, rows] = spikes
            pending[rows] = (np.abs(difference) > 1).reshape(len(rows), -1).any(axis=1)
        return output_train, count


class SpikingOutput:
    """The dense output layer: integrates spikes into a potential, never spikes."""

    def __init__(self, weights):
        self.weights = snap_weights(weights)
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
        # The arguments of the events engine, built on its first use (see run_events).
        self._event_parameters = None

    def reset(self, batch_size):
        for layer in self.layers:
            layer.reset(batch_size)
        self.output.reset(batch_size)

    def step(self, images, time_step, per_image=False):
        """Run time step `time_step` (0-based); return (potential, spikes, sops) of this step.

        `images` (N, 28, 28, 1) in [0, 1) enter the first layer, times 2^k, at step 0.
        `spikes` is (spikes of either sign, net spikes) over all hidden neurons;
        `sops` counts every spike times its fan-out, except those into the first layer.
        With `per_image=True` the second item is (spikes, net spikes, sops), each an
        (N,) array with one value per image.
        """
        if time_step == 0:
            inputs = images.astype(np.float64) * 2.0 ** self.k
        else:
            inputs = np.zeros((len(images), *self.arch.input_shape))
        num_images = len(images)
        spikes_total = np.zeros(num_images, dtype=np.int64)
        net_total = np.zeros(num_images, dtype=np.int64)
        sops = np.zeros(num_images, dtype=np.int64)
        for index, layer in enumerate(self.layers):
            if index > 0:
                per_position = np.count_nonzero(inputs, axis=3)
                sops += np.tensordot(per_position, layer.input_fan_out, axes=([1, 2], [0, 1]))
            inputs = layer.step(inputs)
            flat = inputs.reshape(num_images, -1)
            spikes_total += np.count_nonzero(flat, axis=1)
            net_total += flat.sum(axis=1).astype(np.int64)
        sops += np.count_nonzero(inputs.reshape(num_images, -1), axis=1) * self.output.input_fan_out
        potential = self.output.step(inputs)
        if per_image:
            return potential, (spikes_total, net_total, sops)
        return potential, (int(spikes_total.sum()), int(net_total.sum())), int(sops.sum())

    def spike_counts(self):
        """Return the net spike count arrays of the hidden layers (N, H, W, C)."""
        return [layer.spike_count for layer in self.layers]

    def run(self, images, time_steps):
        """Simulate `time_steps` steps on `images`, layer by layer; return a Trace.

        Gives the same spikes as calling `step` for every time step, computed in
        another order: each layer processes its whole input spike train at once.
        Only the (time step, image) pairs in which some input spike arrived go
        through the convolution, in large matrix products, so images and steps
        in which a layer's input is silent cost nothing. Images are processed in
        chunks of IMAGES_PER_CHUNK to bound memory.
        """
        traces = [self._run_chunk(images[start:start + IMAGES_PER_CHUNK], time_steps)
                  for start in range(0, len(images), IMAGES_PER_CHUNK)]
        return Trace.concatenate(traces)

    def run_events(self, images, time_steps, keep_counts=True):
        """Simulate `time_steps` steps on `images` spike by spike (Numba); return a Trace.

        Gives the same Trace as `run`, with work proportional to the SOPs. Needs
        the `numba` package (see event_kernels). With keep_counts=False the
        Trace's final_counts is None, which saves the time of writing them
        (BENCHMARKS.md).
        """
        import numba
        from numba.typed import List

        from . import event_kernels

        if self._event_parameters is None:
            self._event_parameters = self._prepare_events()
        inputs = np.ascontiguousarray(images, dtype=np.float64) * 2.0 ** self.k
        num_images = len(images)
        columns = {name: np.zeros((time_steps, num_images), dtype=np.int64)
                   for name in ("predictions", "spikes", "net_spikes", "sops")}
        # Numba needs arrays of the right type in the list even when it writes none.
        images_with_counts = num_images if keep_counts else 0
        final_counts = List([np.zeros((images_with_counts, *layer.output_shape)) for layer in self.layers])
        event_kernels.simulate_images(
            inputs, *self._event_parameters, time_steps, columns["predictions"],
            columns["spikes"], columns["net_spikes"], columns["sops"], final_counts,
            keep_counts, max(1, min(numba.get_num_threads(), num_images)))
        return Trace(final_counts=list(final_counts) if keep_counts else None, **columns)

    def _prepare_events(self):
        """Return the arguments of event_kernels.simulate_images that describe the network."""
        from numba.typed import List

        first = self.layers[0]
        later = self.layers[1:]
        # Integer weights take half the memory of float64, and the kernel sums them exactly.
        split = [integer_weights(layer.weights) for layer in later]
        # Numba needs a typed list with at least one element to know its type.
        weights = List([integers for integers, _ in split] or [np.zeros((1, 1, 1, 1), np.int32)])
        units = List([unit for _, unit in split] or [np.ones(1)])
        offsets = List([np.ascontiguousarray(layer.neurons.offset) for layer in later]
                       or [np.zeros(1)])
        thresholds = List([np.ascontiguousarray(layer.neurons.threshold) for layer in later]
                          or [np.ones(1)])
        inverses = List([1.0 / threshold for threshold in thresholds])
        strides = np.array([layer.stride for layer in later] or [1], dtype=np.int64)
        output_shapes = np.array([layer.output_shape for layer in self.layers], dtype=np.int64)
        return (np.ascontiguousarray(first.weights), first.stride,
                np.ascontiguousarray(first.neurons.offset),
                np.ascontiguousarray(first.neurons.threshold),
                weights, units, strides, offsets, thresholds, inverses, output_shapes,
                np.ascontiguousarray(self.output.weights))

    def _run_chunk(self, images, time_steps):
        num_images = len(images)
        totals = SpikeTotals(time_steps, num_images)
        counts = []

        # The first layer's membrane is fixed after the image arrives at step 0, so each
        # neuron sends +1 at steps 0 .. n-1 and nothing after: n is its final count.
        first = self.layers[0]
        membrane = conv2d_valid(images.astype(np.float64) * 2.0 ** self.k, first.weights,
                                first.stride)
        final_count = first.neurons.target_counts(membrane)
        steps = np.arange(time_steps).reshape(-1, *([1] * final_count.ndim))
        spike_train = (steps < final_count).astype(np.int8)
        counts.append(np.minimum(final_count, time_steps))

        # Each layer's spikes are counted (spikes, net spikes, SOPs) by the layer they reach.
        for layer in self.layers[1:]:
            spike_train, count = layer.run_train(spike_train, totals)
            counts.append(count)

        steps, active_images, increments = _train_increments(
            spike_train, lambda x: x.reshape(len(x), -1) @ self.output.weights,
            self.output.input_fan_out, totals)
        potential = np.zeros((num_images, self.output.weights.shape[1]))
        predictions = np.zeros((time_steps, num_images), dtype=np.int64)
        step_bounds = np.searchsorted(steps, np.arange(time_steps + 1))
        for time_step in range(time_steps):
            first, last = step_bounds[time_step], step_bounds[time_step + 1]
            if last > first:
                potential[active_images[first:last]] += increments[first:last]
            predictions[time_step] = np.argmax(potential, axis=1)
        return Trace(predictions, totals.spikes, totals.net_spikes, totals.sops, counts)


# Images simulated together by SpikingNetwork.run; bounds memory at about 150 MB for LeNet.
IMAGES_PER_CHUNK = 50
# (time step, image) slices per matrix product in _train_increments; bounds the im2col copy.
SLICES_PER_PRODUCT = 128


@dataclass
class Trace:
    """Per time step and image: prediction, spikes, net spikes and SOPs of that step.

    Arrays are (time_steps, N); `final_counts` contains each hidden layer's net
    spike counts after the last step (N, H, W, C).
    """

    predictions: np.ndarray
    spikes: np.ndarray
    net_spikes: np.ndarray
    sops: np.ndarray
    final_counts: list

    @classmethod
    def concatenate(cls, traces):
        return cls(*(np.concatenate([getattr(t, name) for t in traces], axis=1)
                     for name in ("predictions", "spikes", "net_spikes", "sops")),
                   [np.concatenate(layer_counts) for layer_counts in
                    zip(*(t.final_counts for t in traces))])


class SpikeTotals:
    """Spikes, net spikes and SOPs per (time step, image), summed over the hidden layers."""

    def __init__(self, time_steps, num_images):
        self.spikes = np.zeros((time_steps, num_images), dtype=np.int64)
        self.net_spikes = np.zeros((time_steps, num_images), dtype=np.int64)
        self.sops = np.zeros((time_steps, num_images), dtype=np.int64)

    def add(self, steps, images, spike_slices, fan_out):
        """Count `spike_slices` (S, H, W, C) or (S, features), sent at (steps, images).

        `fan_out` is the neurons each spike reaches: an (H, W) map or a number.
        Each (step, image) pair may appear only once per call, because the
        fancy-indexed `+=` would count a repeated pair once.
        """
        magnitude = np.abs(spike_slices)
        if np.ndim(fan_out):
            per_position = magnitude.sum(axis=3)
            sops = np.tensordot(per_position, fan_out.astype(np.float64), axes=([1, 2], [0, 1]))
            spikes = per_position.reshape(len(per_position), -1).sum(axis=1)
        else:
            spikes = magnitude.reshape(len(magnitude), -1).sum(axis=1)
            sops = spikes * fan_out
        self.spikes[steps, images] += spikes.astype(np.int64)
        self.sops[steps, images] += sops.astype(np.int64)
        self.net_spikes[steps, images] += spike_slices.reshape(
            len(spike_slices), -1).sum(axis=1).astype(np.int64)


def _train_increments(spike_train, transform, fan_out, totals):
    """Apply `transform` to every (step, image) slice of `spike_train` with a spike in it.

    `spike_train` is (T, N, ...) with values -1, 0, +1. Returns (steps, images,
    increments): the active slices in time-step order and transform(slice) for
    each, in float64. The slices' spikes are added to `totals` with `fan_out`.
    """
    time_steps, num_images = spike_train.shape[:2]
    steps, images = np.nonzero(spike_train.reshape(time_steps, num_images, -1).any(axis=2))
    parts = []
    for start in range(0, len(steps), SLICES_PER_PRODUCT):
        chunk_steps = steps[start:start + SLICES_PER_PRODUCT]
        chunk_images = images[start:start + SLICES_PER_PRODUCT]
        chunk = spike_train[chunk_steps, chunk_images].astype(np.float64)
        totals.add(chunk_steps, chunk_images, chunk, fan_out)
        parts.append(transform(chunk))
    if not parts:
        return steps, images, np.zeros((0,))
    return steps, images, np.concatenate(parts)
