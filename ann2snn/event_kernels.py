"""Event-driven simulation kernels, compiled with Numba.

The same neurons as `spiking_utils`, simulated spike by spike. Every spike adds
its weight column to the membranes it reaches (one synaptic operation each).
Only neurons whose membrane changed, or whose count has not yet reached its
target, are updated. The work is therefore proportional to the SOPs instead of
to the dense convolutions. Images run in parallel over the CPU cores.

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
from numba.typed import List

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


@njit(parallel=True, cache=True)
def simulate_images(inputs, first_weights, first_stride, first_offset, first_threshold,
                    weights, units, strides, offsets, thresholds, inverses,
                    output_shapes, output_weights, time_steps, predictions, spikes_total, net_total, sops_total,
                    final_counts):
    """Simulate every image of `inputs` (N, H, W, C, times 2^k) for `time_steps` steps.

    The first layer (`first_weights`, signed and snapped, `first_stride`,
    `first_offset`, `first_threshold`) sees the image at step 0 only, so its
    membrane is fixed and its final counts are known at once. `weights` (int32,
    (C, kh, kw, O)) and `units` from integer_weights, `offsets`, `thresholds`
    and `inverses` (1 / thresholds) are typed lists for the later hidden layers; `output_shapes` (L, 3) gives every hidden layer's
    output shape, the first included. Results go into `predictions`, `spikes_total`,
    `net_total`, `sops_total` (T, N) and `final_counts` (a list of (N, H, W, C)).
    """
    num_images = inputs.shape[0]
    num_layers = output_shapes.shape[0]
    num_classes = output_weights.shape[1]
    for image in prange(num_images):
        membranes = List()
        counts = List()
        pendings = List()
        dirties = List()
        buffers = List()
        for layer in range(num_layers):
            height, width, channels = output_shapes[layer, 0], output_shapes[layer, 1], output_shapes[layer, 2]
            membranes.append(np.zeros((height, width, channels)))
            counts.append(np.zeros((height, width, channels)))
            # Every neuron is checked once at step 0, for a target above 0 at zero membrane.
            pendings.append(np.ones((height, width), dtype=np.bool_))
            dirties.append(np.zeros((height, width), dtype=np.bool_))
            buffers.append(np.empty((height * width * channels, 4), dtype=np.int32))
        potential = np.zeros(num_classes)
        last_h, last_w, last_c = output_shapes[num_layers - 1, 0], output_shapes[num_layers - 1, 1], output_shapes[num_layers - 1, 2]

        # First layer: its membrane is fixed, so a neuron with target n sends +1 at
        # steps 0 .. n-1. Keep the neurons still below their target in a shrinking list.
        first_h, first_w, first_c = output_shapes[0, 0], output_shapes[0, 1], output_shapes[0, 2]
        first_target = np.empty((first_h, first_w, first_c))
        _first_layer_targets(inputs[image], first_weights, first_stride, first_offset,
                             first_threshold, first_target)
        below = np.empty((first_h * first_w * first_c, 3), dtype=np.int32)
        num_below = 0
        for row in range(first_h):
            for column in range(first_w):
                for channel in range(first_c):
                    if first_target[row, column, channel] > 0.0:
                        below[num_below, 0] = row
                        below[num_below, 1] = column
                        below[num_below, 2] = channel
                        num_below += 1
        first_count = counts[0]
        for time_step in range(time_steps):
            buffer = buffers[0]
            written = 0
            kept = 0
            for index in range(num_below):
                row, column, channel = below[index, 0], below[index, 1], below[index, 2]
                first_count[row, column, channel] += 1.0
                buffer[written, 0] = row
                buffer[written, 1] = column
                buffer[written, 2] = channel
                buffer[written, 3] = 1
                written += 1
                if first_count[row, column, channel] < first_target[row, column, channel]:
                    below[kept, 0] = row
                    below[kept, 1] = column
                    below[kept, 2] = channel
                    kept += 1
            num_below = kept
            spikes = written
            net = written
            sops = 0

            for layer in range(1, num_layers):
                # Every read of a typed-list element updates a reference count atomically,
                # so each list is read once per layer and step, never per spike.
                membrane = membranes[layer]
                dirty = dirties[layer]
                sent = buffers[layer]
                sops += _deliver(buffers[layer - 1], written, weights[layer - 1], strides[layer - 1],
                                 membrane, dirty)
                written = _update_neurons(membrane, units[layer - 1], counts[layer],
                                          pendings[layer], dirty, offsets[layer - 1],
                                          thresholds[layer - 1], inverses[layer - 1], sent)
                spikes += written
                for index in range(written):
                    net += sent[index, 3]

            last = buffers[num_layers - 1]
            for index in range(written):
                feature = (last[index, 0] * last_w + last[index, 1]) * last_c + last[index, 2]
                if last[index, 3] > 0:
                    for label in range(num_classes):
                        potential[label] += output_weights[feature, label]
                else:
                    for label in range(num_classes):
                        potential[label] -= output_weights[feature, label]
            sops += written * num_classes

            predictions[time_step, image] = np.argmax(potential)
            spikes_total[time_step, image] = spikes
            net_total[time_step, image] = net
            sops_total[time_step, image] = sops

        for layer in range(num_layers):
            final_counts[layer][image] = counts[layer]
