"""Event-driven simulation kernels, compiled with Numba.

The same neurons as `spiking_utils`, simulated spike by spike. Every spike adds
its weight column to the membranes it reaches (one synaptic operation each).
Only neurons whose membrane changed, or whose count has not yet reached its
target, are updated. The work is therefore proportional to the SOPs instead of
to the dense convolutions. Images run in parallel over the CPU cores. Each
image runs one layer at a time, through all time steps before the next layer.

`simulate_images` returns the same per-step predictions, spikes, net spikes and
SOPs as SpikingNetwork.run and .step; the tests compare the three.
The additions happen in another order than in the NumPy engines' matrix
products. The weights arrive as int32 multiples of a power-of-two unit per
output channel (spiking_utils.integer_weights), half the bytes of float64, and
the membranes count those units in float64: every sum is an exact integer, so
the results are equal.
"""

import numpy as np
from numba import njit, prange

# The quotient computed with a reciprocal is within 2^-51 of the divided one,
# relative to its size. Farther than this from an integer, both have the same floor.
NEAR_INTEGER = 2.0 ** -49


@njit(cache=True)
def _update_neurons(membrane, unit, count, pending, dirty, offset, threshold, inverse, spikes_out):
    """Send this step's spikes of one layer (one image); return how many were written.

    `membrane` counts each channel's weight `unit` (a power of two), so
    membrane * unit is the exact signed membrane. The target is the same
    floor((membrane * unit - offset) / threshold) as SpikingConv2d's, computed
    with `inverse` (1 / threshold) and checked: a division happens only where
    the quotient lies within NEAR_INTEGER of an integer. A position is visited
    if its membrane changed this step (dirty) or a neuron there has not reached
    its target yet (pending). Spikes go to `spikes_out` as rows (row, column,
    channel, sign).
    """
    height, width, channels = membrane.shape
    targets = np.empty(channels)
    written = 0
    for row in range(height):
        for column in range(width):
            if not (dirty[row, column] or pending[row, column]):
                continue
            dirty[row, column] = False
            # A branch-free loop first, so the compiler can vectorize it. NaN marks
            # the quotients that need the division.
            for channel in range(channels):
                quotient = (membrane[row, column, channel] * unit[channel] - offset[channel]) * inverse[channel]
                below = np.floor(quotient)
                margin = quotient * NEAR_INTEGER
                clear = (quotient - below > margin) & (below + 1.0 - quotient > margin)
                target = below if below > 0.0 else 0.0
                targets[channel] = target if clear else np.nan
            still_pending = False
            for channel in range(channels):
                target = targets[channel]
                if target != target:
                    target = max(np.floor((membrane[row, column, channel] * unit[channel] - offset[channel])
                                          / threshold[channel]), 0.0)
                difference = target - count[row, column, channel]
                if difference == 0.0:
                    continue
                sign = 1 if difference > 0.0 else -1
                count[row, column, channel] += sign
                spikes_out[written, 0] = row
                spikes_out[written, 1] = column
                spikes_out[written, 2] = channel
                spikes_out[written, 3] = sign
                written += 1
                if difference > 1.0 or difference < -1.0:
                    still_pending = True
            pending[row, column] = still_pending
    return written


@njit(cache=True)
def _deliver(spikes, num_spikes, weights, stride, membrane, dirty):
    """Add the weights of `num_spikes` input spikes to a VALID convolution's membranes.

    `weights` are integers (in_channels, kh, kw, out_channels): the block that one
    input channel's spike adds is contiguous. Returns the SOPs: every (spike,
    reached neuron) pair.
    """
    _, kernel_h, kernel_w, out_channels = weights.shape
    out_h, out_w = membrane.shape[0], membrane.shape[1]
    sops = 0
    first = 0
    while first < num_spikes:
        # The update writes spikes position by position, so consecutive spikes often
        # share an input position: such a group reaches the same output positions.
        row, column = spikes[first, 0], spikes[first, 1]
        end = first + 1
        while end < num_spikes and spikes[end, 0] == row and spikes[end, 1] == column:
            end += 1
        # Output rows whose window covers `row`: out_row * stride <= row < out_row * stride + kernel_h.
        first_row = max(0, (row - kernel_h + stride) // stride)
        last_row = min(out_h - 1, row // stride)
        first_column = max(0, (column - kernel_w + stride) // stride)
        last_column = min(out_w - 1, column // stride)
        for out_row in range(first_row, last_row + 1):
            dy = row - out_row * stride
            for out_column in range(first_column, last_column + 1):
                dx = column - out_column * stride
                dirty[out_row, out_column] = True
                sops += out_channels * (end - first)
                for index in range(first, end):
                    channel = spikes[index, 2]
                    if spikes[index, 3] > 0:
                        for out_channel in range(out_channels):
                            membrane[out_row, out_column, out_channel] += weights[channel, dy, dx, out_channel]
                    else:
                        for out_channel in range(out_channels):
                            membrane[out_row, out_column, out_channel] -= weights[channel, dy, dx, out_channel]
        first = end
    return sops


@njit(cache=True)
def _first_layer_targets(image, weights, stride, offset, threshold, target):
    """Write the first layer's final counts for one `image` (H, W, C) into `target`.

    The same VALID convolution and floor((membrane - offset) / threshold), at
    least 0, as SpikingConv2d. Weights are snapped and pixels are multiples of
    2^-8, so every product and sum is exact in any order.
    """
    kernel_h, kernel_w, in_channels, out_channels = weights.shape
    out_h, out_w = target.shape[0], target.shape[1]
    membrane = np.empty(out_channels)
    for out_row in range(out_h):
        for out_column in range(out_w):
            membrane[:] = 0.0
            for dy in range(kernel_h):
                for dx in range(kernel_w):
                    for channel in range(in_channels):
                        value = image[out_row * stride + dy, out_column * stride + dx, channel]
                        if value == 0.0:
                            continue
                        for out_channel in range(out_channels):
                            membrane[out_channel] += value * weights[dy, dx, channel, out_channel]
            for out_channel in range(out_channels):
                target[out_row, out_column, out_channel] = max(np.floor(
                    (membrane[out_channel] - offset[out_channel]) / threshold[out_channel]), 0.0)


@njit(cache=True)
def _room(log, used, extra):
    """Return `log` (rows of spikes) or a larger copy of its first `used` rows, with `extra` rows free."""
    if used + extra <= log.shape[0]:
        return log
    larger = np.empty((max(used + extra, 2 * log.shape[0]), 4), dtype=np.int32)
    larger[:used] = log[:used]
    return larger


@njit(cache=True)
def _first_layer_spikes(image, first_weights, first_stride, first_offset, first_threshold, target,
                        log, bounds, spikes, net):
    """Write the first layer's spikes of all time steps into `log` and return the log.

    The first layer receives the image at step 0 only, so its membrane is fixed
    and a neuron whose final count (`target`, filled here) is n sends +1 at steps 0
    .. n-1. The spikes of step t are rows bounds[t] to bounds[t + 1] of the log.
    """
    _first_layer_targets(image, first_weights, first_stride, first_offset, first_threshold, target)
    height, width, channels = target.shape
    # The neurons still below their target, a list that shrinks step by step.
    below = np.empty((height * width * channels, 3), dtype=np.int32)
    num_below = 0
    for row in range(height):
        for column in range(width):
            for channel in range(channels):
                if target[row, column, channel] > 0.0:
                    below[num_below, 0] = row
                    below[num_below, 1] = column
                    below[num_below, 2] = channel
                    num_below += 1
    used = 0
    for time_step in range(len(bounds) - 1):
        log = _room(log, used, num_below)
        bounds[time_step] = used
        num_still_below = 0
        for index in range(num_below):
            row, column, channel = below[index, 0], below[index, 1], below[index, 2]
            log[used, 0] = row
            log[used, 1] = column
            log[used, 2] = channel
            log[used, 3] = 1
            used += 1
            if time_step + 1 < target[row, column, channel]:
                below[num_still_below, 0] = row
                below[num_still_below, 1] = column
                below[num_still_below, 2] = channel
                num_still_below += 1
        spikes[time_step] += num_below
        net[time_step] += num_below
        num_below = num_still_below
    bounds[-1] = used
    return log


@njit(cache=True)
def _hidden_layer(inputs, input_bounds, weights, stride, unit, offset, threshold, inverse, count,
                  log, bounds, spikes, net, sops):
    """Simulate one hidden layer for all time steps of one image and return its spike log.

    `inputs` contains the previous layer's spikes, those of step t in rows
    input_bounds[t] to input_bounds[t + 1]. This layer's spikes go to `log` in
    the same form, with `bounds`, and its net counts to `count` (H, W, C). The
    step's spikes, net spikes and SOPs are added to `spikes`, `net` and `sops`.
    """
    height, width, channels = count.shape
    membrane = np.zeros((height, width, channels))
    # Every neuron is checked once at step 0, for a target above 0 at zero membrane.
    pending = np.ones((height, width), dtype=np.bool_)
    dirty = np.zeros((height, width), dtype=np.bool_)
    used = 0
    for time_step in range(len(bounds) - 1):
        log = _room(log, used, height * width * channels)
        first, last = input_bounds[time_step], input_bounds[time_step + 1]
        sops[time_step] += _deliver(inputs[first:last], last - first, weights, stride, membrane, dirty)
        written = _update_neurons(membrane, unit, count, pending, dirty, offset, threshold, inverse,
                                  log[used:])
        bounds[time_step] = used
        spikes[time_step] += written
        for index in range(used, used + written):
            net[time_step] += log[index, 3]
        used += written
    bounds[-1] = used
    return log


@njit(parallel=True, cache=True)
def simulate_images(inputs, first_weights, first_stride, first_offset, first_threshold,
                    weights, units, strides, offsets, thresholds, inverses,
                    output_shapes, output_weights, time_steps, predictions, spikes_total, net_total, sops_total,
                    final_counts, keep_counts, num_workers):
    """Simulate every image of `inputs` (N, H, W, C, times 2^k) for `time_steps` steps.

    The first layer (`first_weights`, signed and snapped, `first_stride`,
    `first_offset`, `first_threshold`) sees the image at step 0 only, so its
    membrane is fixed and its final counts are known at once. `weights` (int32,
    (C, kh, kw, O)) and `units` from integer_weights, `offsets`, `thresholds`
    and `inverses` (1 / thresholds) are typed lists for the later hidden layers; `output_shapes` (L, 3) gives every hidden layer's
    output shape, the first included. Results go into `predictions`, `spikes_total`,
    `net_total`, `sops_total` (T, N) and, if `keep_counts`, `final_counts` (a list of (N, H, W, C)).

    Each image runs layer by layer. A layer runs all time steps and writes its
    spikes to a log, from which the next layer runs. No layer feeds back into an
    earlier one, so this gives the same spikes as stepping the whole network, and
    only one layer's weights are in use at a time. The `num_workers` threads each
    take a contiguous share of the images and reuse their logs from image to image.
    """
    num_images = inputs.shape[0]
    num_layers = output_shapes.shape[0]
    num_classes = output_weights.shape[1]
    last_w, last_c = output_shapes[num_layers - 1, 1], output_shapes[num_layers - 1, 2]
    for worker in prange(num_workers):
        # Two logs, for a layer's input spikes and its own, that swap roles layer by layer.
        inputs_log = np.empty((4096, 4), dtype=np.int32)
        outputs_log = np.empty((4096, 4), dtype=np.int32)
        input_bounds = np.zeros(time_steps + 1, dtype=np.int64)
        output_bounds = np.zeros(time_steps + 1, dtype=np.int64)
        for image in range(worker * num_images // num_workers, (worker + 1) * num_images // num_workers):
            spikes = np.zeros(time_steps, dtype=np.int64)
            net = np.zeros(time_steps, dtype=np.int64)
            sops = np.zeros(time_steps, dtype=np.int64)
            first_target = np.empty((output_shapes[0, 0], output_shapes[0, 1], output_shapes[0, 2]))
            inputs_log = _first_layer_spikes(inputs[image], first_weights, first_stride, first_offset,
                                             first_threshold, first_target, inputs_log, input_bounds,
                                             spikes, net)
            if keep_counts:
                final_counts[0][image] = np.minimum(first_target, float(time_steps))

            for layer in range(1, num_layers):
                # Every read of a typed-list element updates a reference count atomically,
                # so each list is read once per layer and image, never per spike.
                count = np.zeros((output_shapes[layer, 0], output_shapes[layer, 1], output_shapes[layer, 2]))
                outputs_log = _hidden_layer(inputs_log, input_bounds, weights[layer - 1], strides[layer - 1],
                                            units[layer - 1], offsets[layer - 1], thresholds[layer - 1],
                                            inverses[layer - 1], count, outputs_log, output_bounds,
                                            spikes, net, sops)
                if keep_counts:
                    final_counts[layer][image] = count
                inputs_log, outputs_log = outputs_log, inputs_log
                input_bounds, output_bounds = output_bounds, input_bounds

            potential = np.zeros(num_classes)
            for time_step in range(time_steps):
                first, last = input_bounds[time_step], input_bounds[time_step + 1]
                for index in range(first, last):
                    row, column, channel = inputs_log[index, 0], inputs_log[index, 1], inputs_log[index, 2]
                    feature = (row * last_w + column) * last_c + channel
                    if inputs_log[index, 3] > 0:
                        for label in range(num_classes):
                            potential[label] += output_weights[feature, label]
                    else:
                        for label in range(num_classes):
                            potential[label] -= output_weights[feature, label]
                sops[time_step] += (last - first) * num_classes
                predictions[time_step, image] = np.argmax(potential)
                spikes_total[time_step, image] = spikes[time_step]
                net_total[time_step, image] = net[time_step]
                sops_total[time_step, image] = sops[time_step]
