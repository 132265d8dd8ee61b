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
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn.data import load_test_set  # noqa: E402
from ann2snn.model_file import MODEL_FILE_NAME, load_model  # noqa: E402
from ann2snn.quantized_ann import forward  # noqa: E402


def count_statistics(counts):
    """Return (mean, 99.9th percentile, maximum) of the non-zero values of `counts`."""
    active = counts[counts > 0]
    if not active.size:
        return 0.0, 0.0, 0.0
    return float(active.mean()), float(np.percentile(active, 99.9)), float(active.max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True,
                        help="folder of a quantized model_fashion_mnist.npz")
    parser.add_argument("--num_images", type=int, default=1000,
                        help="first test images to use (default: 1000)")
    parser.add_argument("--data_dir", default="./data", help="Fashion-MNIST folder (default: ./data)")
    args = parser.parse_args()

    model = load_model(os.path.join(args.model_dir, MODEL_FILE_NAME))
    if model.k is None:
        parser.error(f"{args.model_dir} contains a full-precision model: pass the folder of a "
                     f"quantized one")
    images, _ = load_test_set(args.data_dir)
    images = images[:args.num_images]
    counts, _ = forward(model.architecture, model.params, model.k,
                        model.metadata.get("bn_epsilon", 1e-5), images)
    print(f"{model.architecture.name} k={model.k}, {len(images)} test images; non-zero "
          f"activations in levels (spikes):")
    for layer, layer_counts in zip(model.architecture.hidden, counts):
        mean, high, largest = count_statistics(layer_counts)
        print(f"  {layer.name:6s} mean {mean:5.2f}, 99.9th percentile {high:4.0f}, "
              f"maximum {largest:4.0f}")


if __name__ == "__main__":
    main()
