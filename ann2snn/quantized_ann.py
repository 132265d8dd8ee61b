"""The quantized ANN in NumPy, from the same npz the spiking network uses.

`forward` returns every hidden layer's activations in units of 1/2^k (the
integers n that the spiking neurons' net spike counts must reach) and the
output logits. It is the reference that `--verify` compares the spiking network
with. It applies the same float64 convolution, signed weights and rounding rule
as the neurons, so it differs from the TensorFlow float32 graph only where a
value lies within float32 rounding error of a quantization step.
"""

import numpy as np

from .spiking_utils import SpikingNetwork, conv2d_valid


def forward(arch, params, k, epsilon, images):
    """Return ([counts per hidden layer, (N, H, W, C) float64], logits (N, classes))."""
    return forward_network(SpikingNetwork(arch, params, k, epsilon), images)


def forward_network(network, images):
    """Run `forward` with the weights and neurons of an existing SpikingNetwork."""
    activations = images.astype(np.float64) * 2.0 ** network.k
    counts = []
    for layer in network.layers:
        membrane = conv2d_valid(activations, layer.weights, layer.stride)
        activations = layer.neurons.target_counts(membrane)
        counts.append(activations)
    logits = activations.reshape(len(images), -1) @ network.output.weights
    return counts, logits
