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
from model_options import add_model_options, load_model_and_images, positive_int, spiking_network


def spike_trains(network, images, time_steps):
    """Return every hidden layer's output spikes as an int8 array (T, N, H, W, C)."""
    network.reset(len(images))
    trains = [[] for _ in network.layers]
    for time_step in range(time_steps):
        if time_step == 0:
            inputs = images.astype(np.float64) * 2.0 ** network.k
        else:
            inputs = np.zeros(images.shape)
        for index, layer in enumerate(network.layers):
            inputs = layer.step(inputs)
            trains[index].append(inputs.astype(np.int8))
    return [np.stack(train) for train in trains]


def run_deliveries(train):
    """Return (spikes, runs, deliveries as runs) per neuron summed over time, each (N, H, W, C).

    A run is a maximal sequence of equal non-zero spikes. It costs 1 delivery
    if it is a single spike, else 1 when it starts and 1 when it ends before
    the last step.
    """
    silent = np.zeros_like(train[:1])
    before = np.concatenate([silent, train[:-1]])
    after = np.concatenate([train[1:], silent])
    spiking = train != 0
    starts = spiking & (train != before)
    single = starts & (train != after)
    # A run of two or more steps that ends before the last step: its last spike is
    # followed by a different value.
    ends_early = spiking & (train != after) & ~single
    ends_early[-1] = False
    deliveries = starts.astype(np.int64) + ends_early
    return spiking.sum(axis=0), starts.sum(axis=0), deliveries.sum(axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 200, "first test images to use",
                      model_help="folder of a LeNet or MLP model_fashion_mnist.npz")
    parser.add_argument("--time_steps", type=positive_int, default=20, help="time steps (default: 20)")
    args = parser.parse_args()

    model, images, _ = load_model_and_images(args)
    arch = model.architecture
    network = spiking_network(model)
    trains = spike_trains(network, images, args.time_steps)

    print(f"{arch.name} k={model.k}, {len(images)} images, {args.time_steps} time steps; "
          f"per image:")
    total_sops = total_saved = 0.0
    receivers = [layer.name for layer in arch.hidden[1:]] + ["output"]
    for index, (layer, train) in enumerate(zip(arch.hidden, trains)):
        spikes, runs, deliveries = run_deliveries(train)
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
