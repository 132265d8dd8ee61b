"""Tests of the pieces the events engine adds to the neuron model.

`integer_weights` must split snapped weights exactly. The neuron update of
ann2snn.event_kernels multiplies by 1 / threshold and divides only near an
integer. It must reach the same counts as SpikingConv2d's division, also on
quotients that are integers or a few units in the last place away from one.
"""

import numpy as np
import pytest

from ann2snn.spiking_utils import NeuronParameters, integer_weights, snap_weights

event_kernels = pytest.importorskip("ann2snn.event_kernels")

# Channels of the single output position that the update tests use.
CHANNELS = 512


def test_integer_weights_are_exact():
    rng = np.random.default_rng(0)
    weights = snap_weights(rng.normal(scale=0.05, size=(5, 5, 32, 64)))
    weights[..., 3] = 0.0  # a gamma = 0 channel has no weights at all
    integers, unit = integer_weights(weights)

    assert integers.dtype == np.int32
    assert integers.shape == (32, 5, 5, 64)
    assert integers.flags.c_contiguous
    np.testing.assert_array_equal(integers.transpose(1, 2, 0, 3) * unit, weights)
    assert np.all(np.abs(integers) < 2 ** 29)
    # Every unit is a power of two, so membrane * unit is exact.
    mantissa, _ = np.frexp(unit)
    np.testing.assert_array_equal(mantissa, 0.5)


def test_integer_weights_reject_unsnapped():
    weights = np.full((1, 1, 1, 2), 0.1)
    weights[0, 0, 0, 1] = 0.1 + 2.0 ** -40
    with pytest.raises(ValueError, match="snap_weights"):
        integer_weights(weights)


def settle(membrane, unit, offset, threshold):
    """Run the kernel's neuron update until no neuron spikes; return the final counts."""
    count = np.zeros_like(membrane)
    pending = np.ones(membrane.shape[:2], dtype=np.bool_)
    dirty = np.zeros(membrane.shape[:2], dtype=np.bool_)
    spikes = np.empty((membrane.size, 4), dtype=np.int32)
    for _ in range(10_000):
        if event_kernels._update_neurons(membrane, unit, count, pending, dirty, offset,
                                         threshold, 1.0 / threshold, spikes) == 0:
            return count
    raise AssertionError("the counts did not settle")


def divided_targets(membrane, unit, offset, threshold):
    """Return the counts of SpikingConv2d: max(floor((membrane - offset) / threshold), 0)."""
    neurons = NeuronParameters(sign=np.ones_like(threshold), threshold=threshold, offset=offset)
    return neurons.target_counts(membrane * unit)


def near_integer(membrane, unit, offset, threshold):
    """Return which quotients the kernel can only decide by dividing."""
    quotient = (membrane.ravel() * unit - offset) / threshold
    return np.abs(quotient - np.round(quotient)) <= np.abs(quotient) * event_kernels.NEAR_INTEGER


@pytest.mark.parametrize("seed", range(4))
def test_update_matches_division_near_integers(seed):
    rng = np.random.default_rng(seed)
    threshold = rng.uniform(0.01, 40.0, CHANNELS)
    offset = rng.uniform(-30.0, 30.0, CHANNELS)
    on_integer = rng.integers(-3, 30, CHANNELS) * threshold + offset
    # A unit of about one ulp of the membrane: membranes near 2^52 units, where
    # one unit more or less moves the quotient by a few ulps.
    _, exponent = np.frexp(on_integer)
    unit = np.ldexp(1.0, exponent - 52)
    steps_away = rng.integers(-30, 31, CHANNELS)
    membrane = (np.round(on_integer / unit) + steps_away).reshape(1, 1, CHANNELS)
    assert np.count_nonzero(near_integer(membrane, unit, offset, threshold)) > CHANNELS // 8

    expected = divided_targets(membrane, unit, offset, threshold)
    np.testing.assert_array_equal(settle(membrane, unit, offset, threshold), expected)


def test_update_matches_division_on_integers():
    # Dyadic thresholds and offsets: many quotients are integers exactly.
    threshold = np.full(CHANNELS, 0.375)
    offset = np.full(CHANNELS, -0.1875)
    unit = np.full(CHANNELS, 2.0 ** -10)
    quotient = np.arange(CHANNELS) / 16.0 - 2.0
    membrane = ((quotient * threshold + offset) / unit).reshape(1, 1, CHANNELS)
    assert np.array_equal(membrane, np.round(membrane))

    expected = divided_targets(membrane, unit, offset, threshold)
    assert np.count_nonzero(expected == quotient.reshape(expected.shape)) > CHANNELS // 32
    np.testing.assert_array_equal(settle(membrane, unit, offset, threshold), expected)
