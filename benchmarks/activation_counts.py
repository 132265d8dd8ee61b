"""Print how large the quantized ANN's activations are, per hidden layer, in spikes.

    python benchmarks/activation_counts.py --model_dir DIR [--num_images 1000] [--data_dir ./data]

A spiking neuron sends at most one spike per time step. A neuron whose
activation is n levels (n / 2^k) therefore needs at least n steps to send its
count, and the largest activations bound how fast a network settles. For each hidden
layer this prints the mean of the non-zero activations, their 99.9th
percentile and their maximum on the first --num_images test images, computed
with the NumPy quantized ANN (ann2snn.quantized_ann), whose activations the
spiking network's net spike counts reach.
"""

import argparse
import sys

import numpy as np
from model_options import add_model_options, load_model_and_images, spiking_network

from ann2snn.quantized_ann import forward_network


def count_statistics(counts):
    """Return (mean, 99.9th percentile, maximum) of the non-zero values of `counts`."""
    active = counts[counts > 0]
    if not active.size:
        return 0.0, 0.0, 0.0
    return float(active.mean()), float(np.percentile(active, 99.9)), float(active.max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 1000, "first test images to use",
                      model_help="folder of a quantized model_fashion_mnist.npz", with_k=False)
    args = parser.parse_args()

    model, images, _ = load_model_and_images(args)
    if model.k is None:
        sys.exit(f"error: {args.model_dir} contains a full-precision model: pass the folder "
                 f"of a quantized one")
    counts, _ = forward_network(spiking_network(model), images)
    print(f"{model.architecture.name} k={model.k}, {len(images)} test images; non-zero "
          f"activations in levels (spikes):")
    for layer, layer_counts in zip(model.architecture.hidden, counts):
        mean, high, largest = count_statistics(layer_counts)
        print(f"  {layer.name:6s} mean {mean:5.2f}, 99.9th percentile {high:4.0f}, "
              f"maximum {largest:4.0f}")


if __name__ == "__main__":
    main()
