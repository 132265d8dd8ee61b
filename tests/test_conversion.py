"""Tests of the ANN-to-SNN conversion: spike counts, verify, SOPs and latency fields.

Every hand-made network here has epsilon = 0 and dyadic parameters (sums of powers
of two) with perfect-square variances, so sigma = sqrt(variance) is exact. The
expected counts come from `reference_counts`, an exact rational evaluation of

    n = round_half_up(2^k * ReLU(gamma * (z - mu) / sqrt(var + eps) + beta))

that shares no code with ann2snn.spiking_utils. Each test then checks the final
net spike count of every neuron, and the NumPy ANN of ann2snn.quantized_ann, against it.

The tests of simulate() and summarize() use a LeNet with random but realistic
parameters on the first 60 Fashion-MNIST test images. They are skipped when the
Debian package dataset-fashion-mnist is not installed. No test imports TensorFlow.
"""

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from ann2snn import data, logs, quantized_ann
from ann2snn.architectures import LENET, Architecture, ConvLayer
from ann2snn.model_file import load_model, save_model
from ann2snn.simulation import (
    MAX_REPORTED_MISMATCHES, Mismatch, SimulationResult, first_stable_step, simulate, summarize)
from ann2snn.spiking_utils import SpikingNetwork, snap_weights

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # threadpoolctl comes with scikit-learn and is not required.
    threadpool_limits = None

# Hand-made networks use no batch-norm epsilon, so that sigma = sqrt(variance) exactly.
EPSILON = 0.0
K_VALUES = (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------
# Exact reference (no code shared with ann2snn.spiking_utils)
# ---------------------------------------------------------------------------

def round_half_up(value):
    """Round a Fraction to the nearest integer, with ties going up."""
    return math.floor(value + Fraction(1, 2))


def exact_sqrt(value):
    """Return the square root of a Fraction whose numerator and denominator are squares."""
    numerator = math.isqrt(value.numerator)
    denominator = math.isqrt(value.denominator)
    if numerator ** 2 != value.numerator or denominator ** 2 != value.denominator:
        raise ValueError(f"{value} is not the square of a fraction; pick another test variance")
    return Fraction(numerator, denominator)


def expected_count(z, gamma, beta, mean, variance, k):
    """Return the quantized ANN activation in units of 1/2^k, computed exactly."""
    z, gamma, beta, mean, variance = (Fraction(value) for value in (z, gamma, beta, mean, variance))
    batch_norm = gamma * (z - mean) / exact_sqrt(variance + Fraction(EPSILON)) + beta
    return round_half_up(2 ** k * max(Fraction(0), batch_norm))


@dataclass
class LayerSpec:
    """One hidden layer of a hand-made network: HWIO weights and per-channel batch norm."""

    weights: np.ndarray
    gamma: tuple
    beta: tuple
    mean: tuple
    variance: tuple
    stride: int = 1


def reference_counts(layers, image, k):
    """Return the exact expected counts (H, W, C int arrays) of every layer for one image."""
    activations = np.vectorize(Fraction, otypes=[object])(np.asarray(image, dtype=np.float64))
    all_counts = []
    for layer in layers:
        kernel_height, kernel_width, in_channels, out_channels = layer.weights.shape
        height, width, _ = activations.shape
        out_height = (height - kernel_height) // layer.stride + 1
        out_width = (width - kernel_width) // layer.stride + 1
        counts = np.zeros((out_height, out_width, out_channels), dtype=np.int64)
        for row in range(out_height):
            for column in range(out_width):
                for channel in range(out_channels):
                    z = Fraction(0)
                    for dy in range(kernel_height):
                        for dx in range(kernel_width):
                            for source in range(in_channels):
                                weight = Fraction(float(layer.weights[dy, dx, source, channel]))
                                pixel = activations[row * layer.stride + dy,
                                                    column * layer.stride + dx, source]
                                z += weight * pixel
                    counts[row, column, channel] = expected_count(
                        z, layer.gamma[channel], layer.beta[channel], layer.mean[channel],
                        layer.variance[channel], k)
        all_counts.append(counts)
        # The next layer receives the quantized activations, n / 2^k.
        activations = np.vectorize(lambda n: Fraction(int(n), 2 ** k), otypes=[object])(counts)
    return all_counts


# ---------------------------------------------------------------------------
# Hand-made networks and how they are run
# ---------------------------------------------------------------------------

def make_network(input_shape, layers, num_classes=2):
    """Return (Architecture, npz-ordered params) of a hand-made network."""
    hidden = tuple(
        ConvLayer(f"layer{index}", layer.weights.shape[0], layer.weights.shape[3], layer.stride)
        for index, layer in enumerate(layers))
    arch = Architecture("hand-made", hidden, num_classes=num_classes, input_shape=input_shape)
    params = []
    for layer in layers:
        params.append(np.asarray(layer.weights, dtype=np.float64))
        for values in (layer.beta, layer.gamma, layer.mean, layer.variance):
            params.append(np.asarray(values, dtype=np.float64))
    features = arch.flat_features()
    params.append(np.arange(features * num_classes, dtype=np.float64).reshape(features, num_classes))
    return arch, params


def run_network(arch, params, k, images, time_steps):
    """Run the SNN for `time_steps` steps; return it and the counts of every layer after each step."""
    network = SpikingNetwork(arch, params, k, EPSILON)
    network.reset(len(images))
    history = []
    for time_step in range(time_steps):
        network.step(images, time_step)
        history.append([count.copy() for count in network.spike_counts()])
    return network, history


def run_layer_by_layer(arch, params, k, images, time_steps):
    """Return the Trace of SpikingNetwork.run, the path that simulate() takes by default."""
    return SpikingNetwork(arch, params, k, EPSILON).run(images, time_steps)


def one_by_one(weights):
    """Return HWIO weights of a 1x1 convolution from a (in_channels, out_channels) matrix."""
    weights = np.asarray(weights, dtype=np.float64)
    return weights.reshape(1, 1, *weights.shape)


def row_image(pixels):
    """Return a batch of one 1 x len(pixels) x 1 image."""
    return np.asarray(pixels, dtype=np.float64).reshape(1, 1, len(pixels), 1)


# The three ways SpikingNetwork can run. `step` advances every layer one time step
# at a time, `run` feeds each layer's whole spike train at once, and `run_events`
# goes spike by spike, compiled with Numba (simulate()'s default).
PATHS = ("step", "layer-by-layer", "events")


def snn_final_counts(arch, params, k, images, time_steps, path):
    """Return the SNN's counts per layer after `time_steps` and whether it spiked at the last step."""
    if path == "step":
        network, history = run_network(arch, params, k, images, time_steps)
        spiked_last = any(not np.array_equal(last, before)
                          for last, before in zip(history[-1], history[-2]))
        return network.spike_counts(), spiked_last
    if path == "events":
        trace = SpikingNetwork(arch, params, k, EPSILON).run_events(images, time_steps)
    else:
        trace = run_layer_by_layer(arch, params, k, images, time_steps)
    return trace.final_counts, bool(trace.spikes[-1].any())


def assert_counts_exact(arch, params, layers, images, k, time_steps, path):
    """Check SNN and NumPy ANN counts against `reference_counts`; return the SNN counts.

    Also checks that no layer spiked at the last time step, so the counts have settled.
    """
    snn_counts, spiked_last = snn_final_counts(arch, params, k, images, time_steps, path)
    ann_counts, _ = quantized_ann.forward(arch, params, k, EPSILON, images)
    for index, image in enumerate(images):
        expected = reference_counts(layers, image, k)
        for layer_index, layer_expected in enumerate(expected):
            np.testing.assert_array_equal(
                snn_counts[layer_index][index], layer_expected,
                err_msg=f"{path} SNN counts of layer {layer_index}, image {index}, k={k}")
            np.testing.assert_array_equal(
                ann_counts[layer_index][index], layer_expected,
                err_msg=f"ANN counts of layer {layer_index}, image {index}, k={k}")
    assert not spiked_last, f"{path} SNN still spiked at the last of {time_steps} steps"
    return snn_counts


# ---------------------------------------------------------------------------
# gamma < 0
# ---------------------------------------------------------------------------

# Pixels 0, 1/4, 1/2, 3/4 through a 1x1 convolution with four channels:
#   0: w = -2, gamma = -1,   sigma = 1,   mu = -1/2, beta = 1/4:  y = 2p - 1/4
#   1: w =  1, gamma = -2,   sigma = 2,   mu = 0,    beta = 1:    y = 1 - p
#   2: w =  1, gamma = -1/2, sigma = 1/2, mu = 1/4,  beta = 0:    y = 1/4 - p
#   3: channel 0 with weight and mean negated and gamma = +1, so the same y as channel 0.
NEGATIVE_GAMMA_PIXELS = (0.0, 0.25, 0.5, 0.75)
NEGATIVE_GAMMA_LAYER = LayerSpec(
    weights=one_by_one([[-2.0, 1.0, 1.0, 2.0]]),
    gamma=(-1.0, -2.0, -0.5, 1.0),
    beta=(0.25, 1.0, 0.0, 0.25),
    mean=(-0.5, 0.0, 0.25, 0.5),
    variance=(1.0, 4.0, 0.25, 1.0),
)


def test_negative_gamma_reference_by_hand():
    # 4y per pixel: channel 0: -1, 1, 3, 5; channel 1: 4, 3, 2, 1; channel 2: 1, 0, -1, -2.
    expected = np.array([[[0, 4, 1, 0], [1, 3, 0, 1], [3, 2, 0, 3], [5, 1, 0, 5]]])
    counts = reference_counts([NEGATIVE_GAMMA_LAYER], row_image(NEGATIVE_GAMMA_PIXELS)[0], k=2)

    np.testing.assert_array_equal(counts[0], expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", K_VALUES)
def test_negative_gamma_converts_exactly(k, path):
    arch, params = make_network((1, 4, 1), [NEGATIVE_GAMMA_LAYER])

    assert_counts_exact(arch, params, [NEGATIVE_GAMMA_LAYER], row_image(NEGATIVE_GAMMA_PIXELS),
                        k, 40, path)


@pytest.mark.parametrize("k", K_VALUES)
def test_negative_gamma_equals_flipped_weights(k):
    arch, params = make_network((1, 4, 1), [NEGATIVE_GAMMA_LAYER])
    network, _ = run_network(arch, params, k, row_image(NEGATIVE_GAMMA_PIXELS), 40)
    counts = network.layers[0].spike_count

    assert counts[..., 0].any()
    np.testing.assert_array_equal(counts[..., 0], counts[..., 3])


# ---------------------------------------------------------------------------
# gamma = 0
# ---------------------------------------------------------------------------

ZERO_GAMMA_CASES = [
    (0.75, 2, 3),
    (1.25, 1, 3),   # 2.5 is a tie, which rounds up
    (3.0, 0, 3),
    (2.25, 4, 36),
    (0.0, 3, 0),
    (-0.5, 3, 0),   # ReLU(beta) = 0
    (-4.0, 0, 0),
]


def zero_gamma_params():
    """Return the ZERO_GAMMA_CASES for both paths."""
    cases = []
    for path in PATHS:
        for beta, k, expected in ZERO_GAMMA_CASES:
            cases.append(pytest.param(beta, k, expected, path))
    return cases


@pytest.mark.parametrize("gamma", [0.0, -0.0], ids=["zero", "negative-zero"])
@pytest.mark.parametrize("beta, k, expected, path", zero_gamma_params())
def test_zero_gamma_gives_constant_count(gamma, beta, k, expected, path):
    # Two channels with opposite weights and three different pixels: the input must not matter.
    layer = LayerSpec(weights=one_by_one([[3.0, -5.0]]), gamma=(gamma, gamma), beta=(beta, beta),
                      mean=(0.25, 0.25), variance=(1.0, 4.0))
    arch, params = make_network((1, 3, 1), [layer])
    images = np.concatenate([row_image([0.0, 0.5, 0.75]), row_image([0.875, 0.125, 0.0])])

    counts = assert_counts_exact(arch, params, [layer], images, k, expected + 2, path)

    np.testing.assert_array_equal(counts[0], np.full((2, 1, 3, 2), expected))


# ---------------------------------------------------------------------------
# ReLU cut-off at the offset
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", K_VALUES)
def test_relu_cutoff_at_offset(k, path):
    # y = 2p - 1/2 + 1/4 (w = 2, mu = 1/2, beta = 1/4, sigma = 1): the cut-off is at p = 1/8.
    # Pixels give 2^k * y = 0, 1/2, 1/4, 3/4 and -1/4.
    layer = LayerSpec(weights=one_by_one([[2.0]]), gamma=(1.0,), beta=(0.25,), mean=(0.5,),
                      variance=(1.0,))
    scaled_outputs = [0.0, 0.5, 0.25, 0.75, -0.25]
    pixels = [0.125 + value / 2 ** (k + 1) for value in scaled_outputs]
    arch, params = make_network((1, 5, 1), [layer])
    images = row_image(pixels)

    counts = assert_counts_exact(arch, params, [layer], images, k, 4, path)

    np.testing.assert_array_equal(counts[0][0, 0, :, 0], [0, 1, 0, 1, 0])


# ---------------------------------------------------------------------------
# Rounding ties
# ---------------------------------------------------------------------------

# w = 16 and an identity batch norm, so pixel value / 2^(k+4) gives 2^k * y = value.
TIE_LAYER = LayerSpec(weights=one_by_one([[16.0]]), gamma=(1.0,), beta=(0.0,), mean=(0.0,),
                      variance=(1.0,))


def tie_layer_counts(values, k, path):
    """Return the exact-checked counts of TIE_LAYER for ANN values 2^k * y = `values`."""
    arch, params = make_network((1, len(values), 1), [TIE_LAYER])
    images = row_image([value / 2 ** (k + 4) for value in values])
    counts = assert_counts_exact(arch, params, [TIE_LAYER], images, k, 12, path)
    return counts[0][0, 0, :, 0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", K_VALUES)
def test_rounding_ties_round_up(k, path):
    counts = tie_layer_counts([0.5, 1.5, 2.5, 4.5, 7.5], k, path)

    # Round half to even would give 0, 2, 2, 4, 8.
    np.testing.assert_array_equal(counts, [1, 2, 3, 5, 8])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", K_VALUES)
def test_values_below_tie_round_down(k, path):
    counts = tie_layer_counts([0.375, 1.375, 2.375, 4.375, 7.375], k, path)

    np.testing.assert_array_equal(counts, [0, 1, 2, 4, 7])


# ---------------------------------------------------------------------------
# Every k on the same two-layer network
# ---------------------------------------------------------------------------

# 4x4 image -> 2x2 convolution, 2 channels (one with gamma < 0) -> 3x3x2
#           -> 2x2 convolution, 2 channels (one with gamma < 0) -> 2x2x2.
TWO_LAYER_NETWORK = [
    LayerSpec(
        weights=np.array([[[[1.0, -0.5]], [[0.5, 0.25]]],
                          [[[-0.25, 1.0]], [[2.0, -1.0]]]]),
        gamma=(1.0, -0.5), beta=(0.125, 0.75), mean=(0.25, -0.5), variance=(4.0, 0.25)),
    LayerSpec(
        weights=np.array([[[[0.5, -1.0], [1.0, 0.5]], [[-0.25, 0.5], [0.5, 0.25]]],
                          [[[1.0, 0.25], [-0.5, -0.5]], [[0.25, 1.0], [0.75, -0.25]]]]),
        gamma=(2.0, -1.0), beta=(0.25, 1.5), mean=(0.5, 0.25), variance=(1.0, 4.0)),
]
TWO_LAYER_IMAGES = np.array([
    [[0.0, 0.25, 0.5, 0.75], [0.875, 0.125, 0.0, 0.5], [0.25, 0.625, 0.375, 1.0],
     [0.5, 0.0, 0.75, 0.25]],
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [1.0, 0.0, 0.25, 0.0], [0.0, 0.75, 0.0, 0.125]],
]).reshape(2, 4, 4, 1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", K_VALUES)
def test_counts_match_formula_at_every_k(k, path):
    arch, params = make_network((4, 4, 1), TWO_LAYER_NETWORK)

    assert_counts_exact(arch, params, TWO_LAYER_NETWORK, TWO_LAYER_IMAGES, k, 200, path)


def test_two_layer_network_has_nonzero_counts():
    # Guards the test above against a network whose layers are all zero.
    for k in K_VALUES:
        for image in TWO_LAYER_IMAGES:
            first, second = reference_counts(TWO_LAYER_NETWORK, image, k)
            assert first.any(), f"layer 0 at k={k}"
            assert second.any(), f"layer 1 at k={k}"


# ---------------------------------------------------------------------------
# Counts larger than the number of time steps
# ---------------------------------------------------------------------------

# w = 16, identity batch norm, k = 2, pixel 37/64: 2^k * y = 4 * 16 * 37/64 = 37.
LARGE_COUNT_LAYER = LayerSpec(weights=one_by_one([[16.0]]), gamma=(1.0,), beta=(0.0,),
                              mean=(0.0,), variance=(1.0,))
LARGE_COUNT_IMAGE = row_image([37 / 64])


def large_count_history(time_steps):
    arch, params = make_network((1, 1, 1), [LARGE_COUNT_LAYER])
    _, history = run_network(arch, params, 2, LARGE_COUNT_IMAGE, time_steps)
    return [int(layers[0][0, 0, 0, 0]) for layers in history]


def test_large_count_reference_is_37():
    assert reference_counts([LARGE_COUNT_LAYER], LARGE_COUNT_IMAGE[0], k=2)[0][0, 0, 0] == 37


def test_large_count_rises_one_per_step():
    counts = large_count_history(11)

    assert counts[9] == 10
    assert counts[10] == 11
    assert counts == list(range(1, 12))


def test_large_count_settles_at_target():
    counts = large_count_history(60)

    assert counts[:37] == list(range(1, 38))
    assert counts[39] == 37
    assert counts[36:] == [37] * 24

    arch, params = make_network((1, 1, 1), [LARGE_COUNT_LAYER])
    ann_counts, _ = quantized_ann.forward(arch, params, 2, EPSILON, LARGE_COUNT_IMAGE)
    assert ann_counts[0][0, 0, 0, 0] == 37


@pytest.mark.parametrize("time_steps, expected", [(10, 10), (36, 36), (37, 37), (40, 37), (60, 37)])
def test_layer_by_layer_large_count(time_steps, expected):
    arch, params = make_network((1, 1, 1), [LARGE_COUNT_LAYER])
    trace = run_layer_by_layer(arch, params, 2, LARGE_COUNT_IMAGE, time_steps)

    assert trace.final_counts[0][0, 0, 0, 0] == expected
    assert trace.net_spikes[:, 0].tolist() == [1] * expected + [0] * (time_steps - expected)


# ---------------------------------------------------------------------------
# Overshoot corrected by negative spikes
# ---------------------------------------------------------------------------

# Layer 0: pixel 1/2, weights 6 and 10, identity batch norm: counts 3 * 2^k and 5 * 2^k.
# Layer 1: weights +2 and -1, identity batch norm, so its final count is
# 2 * 3 - 5 = 1 (times 2^k). Both inputs spike once per step, so the membrane climbs by
# one per step while both spike, to 3 * 2^k, and falls by one per step once the
# +2 input has stopped: the neuron must send -1 spikes.
OVERSHOOT_NETWORK = [
    LayerSpec(weights=one_by_one([[6.0, 10.0]]), gamma=(1.0, 1.0), beta=(0.0, 0.0),
              mean=(0.0, 0.0), variance=(1.0, 1.0)),
    LayerSpec(weights=one_by_one([[2.0], [-1.0]]), gamma=(1.0,), beta=(0.0,), mean=(0.0,),
              variance=(1.0,)),
]
OVERSHOOT_IMAGE = row_image([0.5])


@pytest.mark.parametrize("k", (0, 1, 2))
def test_overshoot_sends_negative_spikes(k):
    arch, params = make_network((1, 1, 1), OVERSHOOT_NETWORK)
    _, history = run_network(arch, params, k, OVERSHOOT_IMAGE, 8 * 2 ** k)
    counts = [int(layers[1][0, 0, 0, 0]) for layers in history]
    spikes = np.diff([0] + counts)

    assert (spikes == -1).sum() == 2 * 2 ** k
    assert max(counts) == 3 * 2 ** k
    assert list(spikes[:3 * 2 ** k]) == [1] * 3 * 2 ** k


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", (0, 1, 2))
def test_overshoot_ends_at_exact_count(k, path):
    arch, params = make_network((1, 1, 1), OVERSHOOT_NETWORK)
    counts = assert_counts_exact(arch, params, OVERSHOOT_NETWORK, OVERSHOOT_IMAGE, k,
                                 8 * 2 ** k, path)

    assert counts[1][0, 0, 0, 0] == 2 ** k


def test_network_step_counts_negative_spikes():
    # k = 0: layer 0 sends +1 spikes at steps 0-4 (two neurons, then one), layer 1
    # sends +1 at steps 0-2 and -1 at steps 3 and 4.
    arch, params = make_network((1, 1, 1), OVERSHOOT_NETWORK)
    network = SpikingNetwork(arch, params, 0, EPSILON)
    network.reset(1)
    per_step = [network.step(OVERSHOOT_IMAGE, time_step)[1] for time_step in range(7)]

    assert per_step == [(3, 3), (3, 3), (3, 3), (2, 0), (2, 0), (0, 0), (0, 0)]


def test_layer_by_layer_counts_negative_spikes():
    arch, params = make_network((1, 1, 1), OVERSHOOT_NETWORK)
    trace = run_layer_by_layer(arch, params, 0, OVERSHOOT_IMAGE, 7)

    assert trace.spikes[:, 0].tolist() == [3, 3, 3, 2, 2, 0, 0]
    assert trace.net_spikes[:, 0].tolist() == [3, 3, 3, 0, 0, 0, 0]


# ---------------------------------------------------------------------------
# Neurons that spike without input
# ---------------------------------------------------------------------------

# Layer 0 is the identity, so it is silent for the black image. Layer 1 channel 0 has
# gamma = 0 and beta = 3/4; channel 1 has mu = -1/2, so BN(0) = 1/2. At k = 2 both send
# spikes without any input: counts 3 and 2 for the black image.
BIASED_NETWORK = [
    LayerSpec(weights=one_by_one([[1.0]]), gamma=(1.0,), beta=(0.0,), mean=(0.0,),
              variance=(1.0,)),
    LayerSpec(weights=one_by_one([[1.0, 1.0]]), gamma=(0.0, 1.0), beta=(0.75, 0.0),
              mean=(0.0, -0.5), variance=(1.0, 1.0)),
]
# The first image makes layer 1 spike, so the layer-by-layer run has an output spike
# train. The second image is black, so layer 1 receives no input spike.
BIASED_IMAGES = np.array([[0.5, 0.25], [0.0, 0.0]]).reshape(2, 1, 2, 1)


def test_biased_network_reference_by_hand():
    counts = reference_counts(BIASED_NETWORK, BIASED_IMAGES[1], k=2)

    np.testing.assert_array_equal(counts[0], [[[0], [0]]])
    np.testing.assert_array_equal(counts[1], [[[3, 2], [3, 2]]])


@pytest.mark.parametrize("path", PATHS)
def test_neurons_spike_without_input(path):
    arch, params = make_network((1, 2, 1), BIASED_NETWORK)

    assert_counts_exact(arch, params, BIASED_NETWORK, BIASED_IMAGES, 2, 8, path)


# ---------------------------------------------------------------------------
# LeNet with random parameters on real images: batch size and verify
# ---------------------------------------------------------------------------

LENET_K = 1
LENET_IMAGES = 60
# The random LeNet below settles at step 9 at k = 1, so the latency fields are defined.
LENET_TIME_STEPS = 12
BATCH_SIZES = (1, 7, 50, 60)


def random_lenet_params(seed=0):
    """Return LeNet parameters shaped like a trained model's, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    params = []
    for name, shape in LENET.param_shapes():
        kind = name.split("/")[1]
        if kind == "W":
            value = rng.normal(0.0, 0.05, shape)
        elif kind == "beta":
            value = rng.normal(0.2, 0.2, shape)
        elif kind == "gamma":
            value = rng.normal(1.0, 0.2, shape)
            value[:3] *= -1.0
            value[3] = 0.0
        elif kind == "moving_mean":
            value = rng.normal(0.0, 0.1, shape)
        else:
            value = rng.uniform(0.5, 2.0, shape)
        params.append(value)
    return params


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """Limit BLAS to one thread while this module runs.

    With another process busy on a 2-core machine, OpenBLAS threads made one LeNet
    conv2 step of batch size 1 about 10 times slower (14 ms against 1.3 ms).
    """
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def lenet_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model_fashion_mnist.npz"
    save_model(str(path), LENET, random_lenet_params(),
               {"k": LENET_K, "bn_epsilon": 1e-5, "test_accuracy": None})
    return load_model(str(path), arch=LENET, k=LENET_K)


@pytest.fixture(scope="module")
def fashion_mnist_images(tmp_path_factory):
    system_files = [os.path.join(data.SYSTEM_DATA_DIR, name) for name in data.FILE_NAMES.values()]
    if not all(os.path.isfile(path) for path in system_files):
        pytest.skip(f"Fashion-MNIST not installed in {data.SYSTEM_DATA_DIR} ({data.INSTALL_HINT})")
    x_test, y_test = data.load_test_set(str(tmp_path_factory.mktemp("data")), download=False)
    return x_test[:LENET_IMAGES], y_test[:LENET_IMAGES]


@pytest.fixture(scope="module")
def runs_by_batch_size(lenet_model, fashion_mnist_images):
    images, labels = fashion_mnist_images
    return {batch_size: simulate(lenet_model, images, labels, LENET_TIME_STEPS, batch_size,
                                 verify=True, progress=False)
            for batch_size in BATCH_SIZES}


def test_random_lenet_settles_with_negative_spikes(lenet_model, runs_by_batch_size):
    # Guards the batch-size and verify tests against a model that has not settled
    # within LENET_TIME_STEPS or whose neurons never correct their counts.
    summary = summarize(runs_by_batch_size[LENET_IMAGES], lenet_model, LENET_TIME_STEPS,
                        LENET_IMAGES)

    assert summary["settled_step"] is not None
    assert summary["negative_spikes_per_image"] > 0


@pytest.mark.parametrize("name", logs.LOG_NAMES)
def test_batch_size_leaves_log_sums_unchanged(runs_by_batch_size, name):
    reference = runs_by_batch_size[LENET_IMAGES].logs[name].sum(axis=0)

    for batch_size, result in runs_by_batch_size.items():
        np.testing.assert_array_equal(result.logs[name].sum(axis=0), reference,
                                      err_msg=f"{name} with batch size {batch_size}")


def test_log_lines_equal_batches_times_steps(tmp_path, lenet_model, runs_by_batch_size):
    for batch_size, result in runs_by_batch_size.items():
        num_batches = -(-LENET_IMAGES // batch_size)
        summary = summarize(result, lenet_model, LENET_TIME_STEPS, batch_size)
        run_dir = tmp_path / f"batch{batch_size}" / f"k{LENET_K}"
        logs.write_run_logs(run_dir, result.logs, summary)

        for name in logs.LOG_NAMES:
            assert result.logs[name].shape == (num_batches, LENET_TIME_STEPS)
            lines = logs.log_path(run_dir, name).read_text().splitlines()
            assert len(lines) == num_batches * LENET_TIME_STEPS, f"{name}, batch size {batch_size}"


SUMMARY_FIELDS_INDEPENDENT_OF_BATCH_SIZE = (
    "num_images", "numpy_ann_accuracy", "snn_accuracy", "stable_accuracy_step",
    "ann_agreement_step", "settled_step", "spikes_per_image", "positive_spikes_per_image",
    "negative_spikes_per_image", "sops_per_image", "verify_mismatches")


def test_batch_size_leaves_summary_unchanged(lenet_model, runs_by_batch_size):
    summaries = {batch_size: summarize(result, lenet_model, LENET_TIME_STEPS, batch_size)
                 for batch_size, result in runs_by_batch_size.items()}
    reference = summaries[LENET_IMAGES]

    for batch_size, summary in summaries.items():
        for field in SUMMARY_FIELDS_INDEPENDENT_OF_BATCH_SIZE:
            assert summary[field] == reference[field], f"{field} with batch size {batch_size}"


def test_batch_size_leaves_disagreement_steps_unchanged(runs_by_batch_size):
    reference = runs_by_batch_size[LENET_IMAGES].last_disagreement

    for batch_size, result in runs_by_batch_size.items():
        np.testing.assert_array_equal(result.last_disagreement, reference,
                                      err_msg=f"batch size {batch_size}")


@pytest.mark.parametrize("engine", ["steps", "layers"])
def test_engines_give_same_logs(engine, lenet_model, fashion_mnist_images, runs_by_batch_size):
    images, labels = fashion_mnist_images
    other = simulate(lenet_model, images, labels, LENET_TIME_STEPS, 50, verify=True,
                     progress=False, engine=engine)
    events = runs_by_batch_size[50]

    for name in logs.LOG_NAMES:
        np.testing.assert_array_equal(other.logs[name], events.logs[name], err_msg=name)
    np.testing.assert_array_equal(other.last_disagreement, events.last_disagreement)
    np.testing.assert_array_equal(other.last_spike_step, events.last_spike_step)
    assert other.mismatch_counts == events.mismatch_counts


def test_unverified_events_same_logs(lenet_model, fashion_mnist_images, runs_by_batch_size):
    # Without verify the events engine skips writing the final counts, and the logs must not change.
    images, labels = fashion_mnist_images
    for batch_size in (7, 50):
        unverified = simulate(lenet_model, images, labels, LENET_TIME_STEPS, batch_size,
                              compare_with_ann=False, progress=False)
        for name in logs.LOG_NAMES:
            verified = runs_by_batch_size[batch_size].logs[name]
            np.testing.assert_array_equal(unverified.logs[name], verified,
                                          err_msg=f"{name} with batch size {batch_size}")


def test_events_skip_final_counts(lenet_model, fashion_mnist_images):
    network = SpikingNetwork(lenet_model.architecture, lenet_model.params, LENET_K, EPSILON)
    images = fashion_mnist_images[0][:5]
    with_counts = network.run_events(images, LENET_TIME_STEPS)
    without_counts = network.run_events(images, LENET_TIME_STEPS, keep_counts=False)

    assert without_counts.final_counts is None
    assert len(with_counts.final_counts) == len(LENET.hidden)
    for name in ("predictions", "spikes", "net_spikes", "sops"):
        np.testing.assert_array_equal(getattr(without_counts, name), getattr(with_counts, name), err_msg=name)


def test_events_thread_count_same_trace(lenet_model, fashion_mnist_images):
    # Each thread takes a contiguous share of the images, so one thread must give the same trace.
    numba = pytest.importorskip("numba")
    network = SpikingNetwork(lenet_model.architecture, lenet_model.params, LENET_K, EPSILON)
    images = fashion_mnist_images[0][:13]
    default_trace = network.run_events(images, LENET_TIME_STEPS)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single_trace = network.run_events(images, LENET_TIME_STEPS)
    finally:
        numba.set_num_threads(threads)

    for name in ("predictions", "spikes", "net_spikes", "sops"):
        np.testing.assert_array_equal(getattr(single_trace, name), getattr(default_trace, name),
                                      err_msg=name)
    for layer, (single, default) in enumerate(zip(single_trace.final_counts, default_trace.final_counts)):
        np.testing.assert_array_equal(single, default, err_msg=f"final counts of layer {layer}")


def test_verify_finds_no_mismatch_when_settled(runs_by_batch_size):
    for batch_size, result in runs_by_batch_size.items():
        assert result.mismatch_counts == {layer.name: 0 for layer in LENET.hidden}, (
            f"batch size {batch_size}")
        assert result.mismatches == []


# After one step every layer of the random LeNet still has counts that differ from the ANN's.
UNSETTLED_STEPS = 1


def unsettled_counts(model, images):
    """Return the SNN counts after UNSETTLED_STEPS steps and the ANN counts, per layer."""
    epsilon = model.metadata["bn_epsilon"]
    network = SpikingNetwork(LENET, model.params, model.k, epsilon)
    network.reset(len(images))
    for time_step in range(UNSETTLED_STEPS):
        network.step(images, time_step)
    ann_counts, _ = quantized_ann.forward(LENET, model.params, model.k, epsilon, images)
    return network.spike_counts(), ann_counts


def test_unsettled_lenet_differs_in_every_layer(lenet_model, fashion_mnist_images):
    images, _ = fashion_mnist_images
    snn_counts, ann_counts = unsettled_counts(lenet_model, images)

    for layer, snn, ann in zip(LENET.hidden, snn_counts, ann_counts):
        assert np.count_nonzero(snn != ann) > 0, layer.name


def test_verify_reports_unsettled_neurons(lenet_model, fashion_mnist_images):
    images, labels = fashion_mnist_images
    result = simulate(lenet_model, images, labels, UNSETTLED_STEPS, 7, verify=True,
                      progress=False)
    snn_counts, ann_counts = unsettled_counts(lenet_model, images)
    layer_index = {layer.name: index for index, layer in enumerate(LENET.hidden)}

    assert result.mismatch_counts[LENET.hidden[0].name] > 0
    assert len(result.mismatches) == MAX_REPORTED_MISMATCHES
    for mismatch in result.mismatches:
        assert isinstance(mismatch, Mismatch)
        index = layer_index[mismatch.layer]
        row, column = mismatch.position
        where = (mismatch.image, row, column, mismatch.channel)
        assert mismatch.snn_count != mismatch.ann_count
        assert mismatch.snn_count == snn_counts[index][where], mismatch
        assert mismatch.ann_count == ann_counts[index][where], mismatch


def test_verify_counts_every_mismatch(lenet_model, fashion_mnist_images):
    images, labels = fashion_mnist_images
    result = simulate(lenet_model, images, labels, UNSETTLED_STEPS, 7, verify=True,
                      progress=False)
    snn_counts, ann_counts = unsettled_counts(lenet_model, images)
    expected = {layer.name: int(np.count_nonzero(snn != ann))
                for layer, snn, ann in zip(LENET.hidden, snn_counts, ann_counts)}

    assert result.mismatch_counts == expected


# ---------------------------------------------------------------------------
# Synaptic operations
# ---------------------------------------------------------------------------

def known_spike_pattern_network():
    """Return (arch, params, image) of the network described in the test below."""
    image = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 3, 3, 1)
    layers = [
        LayerSpec(weights=one_by_one([[1.0]]), gamma=(1.0,), beta=(0.0,), mean=(0.0,),
                  variance=(1.0,)),
        LayerSpec(weights=np.ones((2, 2, 1, 2)), gamma=(0.0, 0.0), beta=(1.0, 2.0),
                  mean=(0.0, 0.0), variance=(1.0, 1.0)),
    ]
    arch, params = make_network((3, 3, 1), layers, num_classes=3)
    return arch, params, image


KNOWN_PATTERN_SOPS = [(2 + 4 + 8) + 8 * 3, (2 + 8) + 4 * 3, 8, 0, 0]


def test_sops_of_known_spike_pattern():
    # Layer 0: 1x1 identity on a 3x3 image, k = 0, so its counts are the pixels:
    #   2 1 0
    #   0 3 0      spikes at step 0: (0,0), (0,1), (1,1); step 1: (0,0), (1,1); step 2: (1,1).
    #   0 0 0
    # Layer 1: 2x2 VALID convolution, 2 channels, 2x2 output. A layer-0 position reaches
    # (windows covering its row) x (windows covering its column) x 2 channels neurons:
    # (0,0) a corner: 1 x 1 x 2 = 2; (0,1) an edge: 1 x 2 x 2 = 4; (1,1) the centre: 2 x 2 x 2 = 8.
    # Both layer-1 channels have gamma = 0, with constant counts 1 and 2, so layer 1 sends
    # 8 spikes at step 0 and 4 at step 1; each reaches the 3 output neurons.
    # The 3 image pixels entering layer 0 are not counted.
    arch, params, image = known_spike_pattern_network()
    network = SpikingNetwork(arch, params, 0, EPSILON)
    network.reset(1)

    sops = [network.step(image, time_step)[2] for time_step in range(5)]

    assert sops == KNOWN_PATTERN_SOPS


def test_layer_by_layer_sops_of_known_pattern():
    arch, params, image = known_spike_pattern_network()
    trace = run_layer_by_layer(arch, params, 0, image, 5)

    assert trace.sops[:, 0].tolist() == KNOWN_PATTERN_SOPS


def uncovered_border_network():
    """Return (arch, params, image) of the network described in the test below."""
    image = np.zeros((1, 3, 3, 1))
    for row, column in ((0, 0), (1, 1), (0, 2), (2, 2)):
        image[0, row, column, 0] = 1.0
    layers = [
        LayerSpec(weights=one_by_one([[1.0]]), gamma=(1.0,), beta=(0.0,), mean=(0.0,),
                  variance=(1.0,)),
        LayerSpec(weights=np.ones((2, 2, 1, 3)), gamma=(0.0, 0.0, 0.0), beta=(0.0, 0.0, 0.0),
                  mean=(0.0, 0.0, 0.0), variance=(1.0, 1.0, 1.0), stride=2),
    ]
    arch, params = make_network((3, 3, 1), layers, num_classes=4)
    return arch, params, image


def test_sops_skip_positions_no_window_covers():
    # A 2x2 stride-2 convolution on a 3x3 map covers rows and columns 0 and 1 only, so
    # spikes at (0,2) and (2,2) reach no neuron, and those at (0,0) and (1,1) reach the
    # 3 channels of the single output position. Layer 1 never spikes (gamma = 0, beta = 0).
    arch, params, image = uncovered_border_network()
    network = SpikingNetwork(arch, params, 0, EPSILON)
    network.reset(1)

    _, (spikes, net), sops = network.step(image, 0)

    assert (spikes, net) == (4, 4)
    assert sops == 2 * 3



def test_layer_by_layer_sops_skip_uncovered_positions():
    arch, params, image = uncovered_border_network()
    trace = run_layer_by_layer(arch, params, 0, image, 2)

    assert trace.spikes[:, 0].tolist() == [4, 0]
    assert trace.sops[:, 0].tolist() == [2 * 3, 0]


# ---------------------------------------------------------------------------
# Latency fields
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 3, 3], 3),
    ([5, 5, 5], 1),
    ([0, 1], 2),
    ([3, 1, 3], 3),   # equal to the last value at step 1, but not kept
    ([7], 1),
])
def test_first_stable_step(values, expected):
    assert first_stable_step(values) == expected


TIME_STEPS = 5


def hand_result(accuracy=((0, 1, 2, 2, 2), (1, 1, 1, 1, 1)),
                last_disagreement=(-1, -1, -1, -1, -1), last_spike_step=(-1, -1)):
    """Return a SimulationResult of 2 batches (3 and 2 images) x 5 steps with chosen fields."""
    accuracy = np.array(accuracy)
    spikes = np.tile(np.arange(1, TIME_STEPS + 1), (2, 1))
    return SimulationResult(
        logs={"accuracy": accuracy, "spike_num": spikes, "spike_collect": spikes,
              "sop_num": 10 * spikes},
        batch_sizes=[3, 2], ann_correct=3, last_disagreement=np.array(last_disagreement),
        last_spike_step=np.array(last_spike_step))


def hand_summary(tmp_path, **fields):
    model = SimpleNamespace(architecture=LENET, k=1, metadata={},
                            path=str(tmp_path / "model_fashion_mnist.npz"))
    return summarize(hand_result(**fields), model, TIME_STEPS, 3)


@pytest.mark.parametrize("accuracy, expected", [
    (((0, 1, 2, 2, 2), (1, 1, 1, 1, 1)), 3),   # sums 1, 2, 3, 3, 3
    (((2, 1, 2, 1, 2), (0, 1, 0, 1, 0)), 1),   # each batch changes, the sum stays 2
    (((0, 0, 0, 0, 3), (0, 0, 0, 0, 0)), 5),
])
def test_stable_accuracy_step(tmp_path, accuracy, expected):
    assert hand_summary(tmp_path, accuracy=accuracy)["stable_accuracy_step"] == expected


@pytest.mark.parametrize("last_disagreement, expected", [
    ((-1, -1, -1, -1, -1), 1),
    ((0, 2, -1, 1, -1), 4),
    ((-1, -1, 3, -1, -1), 5),
    ((-1, 4, -1, -1, -1), None),   # still disagreeing at the last step
])
def test_ann_agreement_step(tmp_path, last_disagreement, expected):
    summary = hand_summary(tmp_path, last_disagreement=last_disagreement)

    assert summary["ann_agreement_step"] == expected


@pytest.mark.parametrize("last_spike_step, expected", [
    ((-1, -1), 1),
    ((0, 2), 4),
    ((3, 1), 5),
    ((0, 4), None),   # still spiking at the last step
])
def test_settled_step(tmp_path, last_spike_step, expected):
    assert hand_summary(tmp_path, last_spike_step=last_spike_step)["settled_step"] == expected


# ---------------------------------------------------------------------------
# Snapped weights make every membrane sum exact
# ---------------------------------------------------------------------------

def test_snap_keeps_dyadic_weights():
    weights = np.array([[0.5, -0.25], [0.125, 1.0], [-3.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(snap_weights(weights), weights)


def test_snap_changes_weights_below_float32_resolution():
    rng = np.random.default_rng(3)
    weights = (rng.standard_normal((5, 5, 32, 64)) * 10.0 ** rng.uniform(-9, 0, (5, 5, 32, 64)))
    weights = weights.astype(np.float32)
    snapped = snap_weights(weights)
    largest = np.abs(weights.reshape(-1, 64)).max(axis=0)
    assert np.all(np.abs(snapped - weights) <= largest * 2.0 ** -28)


def test_snapped_sums_ignore_addition_order():
    # Weights spanning nine decades: plain float64 sums round, and their order matters.
    rng = np.random.default_rng(4)
    weights = (rng.standard_normal((1600, 8)) * 10.0 ** rng.uniform(-9, 0, (1600, 8)))
    weights = weights.astype(np.float32).astype(np.float64)
    counts = rng.integers(-40, 41, (1600, 1)).astype(np.float64)
    order = rng.permutation(1600)

    def sums(matrix):
        forward = np.zeros(8)
        for row in range(1600):
            forward += matrix[row] * counts[row]
        shuffled = np.zeros(8)
        for row in order:
            shuffled += matrix[row] * counts[row]
        return forward, shuffled, (counts.T @ matrix)[0]

    plain_forward, plain_shuffled, plain_product = sums(weights)
    # Guards the test: unsnapped sums must depend on the order, or it checks nothing.
    order_matters = (not np.array_equal(plain_forward, plain_shuffled)
                     or not np.array_equal(plain_forward, plain_product))
    assert order_matters
    forward, shuffled, product = sums(snap_weights(weights))
    np.testing.assert_array_equal(forward, shuffled)
    np.testing.assert_array_equal(forward, product)
