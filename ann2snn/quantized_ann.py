"""The quantized ANN in NumPy, from the same npz the spiking network uses.

`forward` returns every hidden layer's activations in units of 1/2^k (the
integers n that the spiking neurons' net spike counts must reach) and the
output logits. It is the reference that `--verify` compares the spiking network
with. It applies the same float64 convolution and the same rounding rule as the
neurons, so it differs from the TensorFlow float32 graph only where a value lies
within float32 rounding error of a quantization step.
"""

import numpy as np

from .spiking_utils import conv2d_valid, neurons_of


def forward(arch, params, k, epsilon, images):
    """Return ([counts per hidden layer, (N, H, W, C) float64], logits (N, classes))."""
    activations = images.astype(np.float64) * 2.0 ** k
    counts = []
    for index, (layer, neurons) in enumerate(zip(arch.hidden, neurons_of(arch, params, k, epsilon))):
        membrane = conv2d_valid(activations, neurons.signed(params[5 * index]), layer.stride)
        activations = neurons.target_counts(membrane)
        counts.append(activations)
    logits = activations.reshape(len(images), -1) @ np.asarray(params[-1], dtype=np.float64)
    return counts, logits
