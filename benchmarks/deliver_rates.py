"""Time the events kernel's spike delivery alone, on spike buffers shaped like LeNet's layers.

    python benchmarks/deliver_rates.py [--calls 20000]

`event_kernels._deliver` adds the weight column of every input spike to the
membranes it reaches. This script calls it on synthetic buffers of one time
step, with random int32 weights of LeNet's shapes. The spikes are sorted by
input position, as the neuron update writes them. It prints microseconds per
call, nanoseconds per spike and output position, and SOPs per second, for:

- pool1: 750 spikes from conv1 (24 x 24 x 32) into a 2 x 2 stride-2 layer of 32 channels;
- conv2: 270 spikes from pool1 (12 x 12 x 32) into a 5 x 5 layer of 64 channels;
- fc1: 125 spikes from pool2 (4 x 4 x 64) into 1,024 channels.

The same buffer is delivered again and again, so all weights it touches stay
in the caches. In a real run, fc1's 4 MiB of weights come from L3; the other
layers' weights fit in L2.
"""

import argparse
import time

import numpy as np
from model_options import positive_int

from ann2snn import event_kernels

# name, input shape (H, W, C), kernel size, stride, output channels, spikes per call
LAYERS = (
    ("pool1", (24, 24, 32), 2, 2, 32, 750),
    ("conv2", (12, 12, 32), 5, 1, 64, 270),
    ("fc1", (4, 4, 64), 4, 1, 1024, 125),
)
# Share of negative spikes, about that of the shipped LeNet at k=1.
NEGATIVE_SHARE = 0.15


def spike_buffer(rng, input_shape, num_spikes):
    """Return num_spikes distinct spikes (row, column, channel, sign), sorted by position."""
    height, width, channels = input_shape
    neurons = np.sort(rng.choice(height * width * channels, num_spikes, replace=False))
    spikes = np.empty((num_spikes, 4), dtype=np.int32)
    spikes[:, 0] = neurons // channels // width
    spikes[:, 1] = neurons // channels % width
    spikes[:, 2] = neurons % channels
    spikes[:, 3] = np.where(rng.random(num_spikes) < NEGATIVE_SHARE, -1, 1)
    return spikes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive_int, default=20000,
                        help="timed calls per layer (default: 20000)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    for name, input_shape, kernel, stride, out_channels, num_spikes in LAYERS:
        weights = rng.integers(-2 ** 28, 2 ** 28, size=(input_shape[2], kernel, kernel, out_channels),
                               dtype=np.int32)
        out_size = (input_shape[0] - kernel) // stride + 1
        membrane = np.zeros((out_size, out_size, out_channels))
        dirty = np.zeros((out_size, out_size), dtype=np.bool_)
        spikes = spike_buffer(rng, input_shape, num_spikes)
        # The first call compiles the kernel for these types.
        sops = event_kernels._deliver(spikes, num_spikes, weights, stride, membrane, dirty)
        start = time.perf_counter()
        for _ in range(args.calls):
            event_kernels._deliver(spikes, num_spikes, weights, stride, membrane, dirty)
        seconds = (time.perf_counter() - start) / args.calls
        pairs = sops // out_channels
        print(f"{name:6s} {num_spikes:4d} spikes, {pairs:5d} (spike, output position) pairs: "
              f"{seconds * 1e6:6.2f} us per call, {seconds / pairs * 1e9:6.2f} ns per pair, "
              f"{sops / seconds / 1e9:5.2f} G SOP/s")


if __name__ == "__main__":
    main()
