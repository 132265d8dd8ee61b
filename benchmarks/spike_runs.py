"""Estimate the deliveries saved by sending runs of equal spikes as changes of a per-step input.

    python benchmarks/spike_runs.py --model_dir DIR [--k 1] [--num_images 200]
        [--time_steps 20] [--data_dir ./data]

An event-driven simulator adds a neuron's weights to its targets once per
spike. A neuron that sends the same spike for L >= 2 steps in a row could
instead add its weights to a per-step increment when the run starts and remove
them when it ends: 2 deliveries instead of L (1 if the run lasts to the last
step), at the price of adding the increments to the membranes at every step.
Single spikes stay single deliveries. For every hidden layer of the model this
prints the spikes it sends per image, its runs, and the deliveries and SOPs of
that scheme against those of spike-by-spike delivery, on the first
--num_images test images.
"""

import argparse

import numpy as np
from model_options import (MAX_TIME_STEPS, add_model_options, load_model_and_images,
                           spiking_network, time_step_count)

# Images simulated together. The per-neuron counts are stored for these images only,
# so the memory does not grow with --num_images or --time_steps.
IMAGES_PER_CHUNK = 50


class RunCounter:
    """Counts of spikes, runs and deliveries as runs of a group of neurons, added step by step.

    A run is a maximal sequence of equal non-zero spikes. It costs 1 delivery
    if it is a single spike, else 1 when it starts and 1 when it ends before
    the last step. `spikes`, `runs` and `deliveries` are int64 arrays of the
    neurons' shape, summed over the steps added so far.
    """

    def __init__(self, shape):
        self.spikes = np.zeros(shape, dtype=np.int64)
        self.runs = np.zeros(shape, dtype=np.int64)
        self.deliveries = np.zeros(shape, dtype=np.int64)
        # Spikes of the last two steps added. Before the first step, all neurons count as silent.
        self.previous = np.zeros(shape, dtype=np.int8)
        self.before_previous = np.zeros(shape, dtype=np.int8)

    def add(self, spikes):
        """Count the spikes (-1, 0 or 1) that the neurons send at the next time step."""
        spikes = np.asarray(spikes).astype(np.int8)
        # A run of two or more steps ended at the previous step, so that step was not the last.
        ended = ((self.previous != 0) & (self.previous == self.before_previous)
                 & (self.previous != spikes))
        spiking = spikes != 0
        starts = spiking & (spikes != self.previous)
        self.spikes += spiking
        self.runs += starts
        self.deliveries += starts
        self.deliveries += ended
        self.before_previous, self.previous = self.previous, spikes


def run_deliveries(train):
    """Return (spikes, runs, deliveries as runs) per neuron of `train` (T, N, H, W, C), summed over time."""
    counter = RunCounter(train.shape[1:])
    for spikes in train:
        counter.add(spikes)
    return counter.spikes, counter.runs, counter.deliveries


def count_runs(network, images, time_steps):
    """Simulate `images` and return (spikes, runs, deliveries as runs) of every hidden layer.

    Each count is an int64 array (H, W, C), summed over the images and time steps.
    """
    totals = [[np.zeros(layer.output_shape, dtype=np.int64) for _ in range(3)]
              for layer in network.layers]
    for start in range(0, len(images), IMAGES_PER_CHUNK):
        chunk = images[start:start + IMAGES_PER_CHUNK]
        network.reset(len(chunk))
        counters = [RunCounter((len(chunk), *layer.output_shape)) for layer in network.layers]
        for time_step in range(time_steps):
            if time_step == 0:
                inputs = chunk.astype(np.float64) * 2.0 ** network.k
            else:
                inputs = np.zeros(chunk.shape)
            for layer, counter in zip(network.layers, counters):
                inputs = layer.step(inputs)
                counter.add(inputs)
        for layer_totals, counter in zip(totals, counters):
            for total, counts in zip(layer_totals, (counter.spikes, counter.runs,
                                                    counter.deliveries)):
                total += counts.sum(axis=0)
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 200, "first test images to use",
                      model_help="folder of a LeNet or MLP model_fashion_mnist.npz")
    parser.add_argument("--time_steps", type=time_step_count, default=20,
                        help=f"time steps simulated per image, 1 to {MAX_TIME_STEPS} (default: 20)")
    args = parser.parse_args()

    model, images, _ = load_model_and_images(args)
    arch = model.architecture
    network = spiking_network(model)
    layer_totals = count_runs(network, images, args.time_steps)

    print(f"{arch.name} k={model.k}, {len(images)} images, {args.time_steps} time steps; "
          f"per image:")
    total_sops = total_saved = 0.0
    receivers = [layer.name for layer in arch.hidden[1:]] + ["output"]
    for index, (layer, (spikes, runs, deliveries)) in enumerate(zip(arch.hidden, layer_totals)):
        # SOPs of one delivery from each position: the neurons it reaches.
        if index + 1 < len(network.layers):
            fan_out = network.layers[index + 1].input_fan_out[:, :, np.newaxis]
        else:
            fan_out = network.output.input_fan_out
        sops = float((spikes * fan_out).sum()) / len(images)
        run_sops = float((deliveries * fan_out).sum()) / len(images)
        total_sops += sops
        total_saved += sops - run_sops
        print(f"  {layer.name:8s} -> {receivers[index]:8s} spikes {spikes.sum() / len(images):8.0f}, "
              f"runs {runs.sum() / len(images):8.0f}, deliveries as runs "
              f"{deliveries.sum() / len(images):8.0f} ({1 - deliveries.sum() / spikes.sum():5.1%} "
              f"fewer), SOPs {sops / 1e6:6.2f} M -> {run_sops / 1e6:6.2f} M")
    print(f"  all layers: {total_saved / total_sops:.1%} of {total_sops / 1e6:.2f} M SOPs saved, "
          f"before the per-step additions of the increments")


if __name__ == "__main__":
    main()
