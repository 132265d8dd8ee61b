"""Tests of the benchmark: the reference simulator agrees with `simulation.simulate`, and the script runs.

The models have random parameters whose batch norms are fitted to the first
test images, so that roughly half of every layer's neurons are active, and a few
channels have gamma < 0 and one has gamma = 0. They run on the real
Fashion-MNIST test images, and the tests are skipped if those are missing.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from ann2snn.architectures import LENET, MLP
from ann2snn.data import load_test_set
from ann2snn.model_file import MODEL_FILE_NAME, Model, save_model
from ann2snn.simulation import simulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK_DIR = os.path.join(REPO, "benchmarks")
sys.path.insert(0, BENCHMARK_DIR)

import benchmark_simulation  # noqa: E402
from reference_simulator import (  # noqa: E402
    LOG_NAMES, QUANTIZER_OFFSET, ReferenceLayer, ReferenceNeurons, im2col_indices, simulate_reference)

NUM_IMAGES = 20
BN_EPSILON = 1e-5


@pytest.fixture(scope="module")
def data_dir(fashion_mnist_dir):
    return str(fashion_mnist_dir)


@pytest.fixture(scope="module")
def sample_images(data_dir):
    images, labels = load_test_set(data_dir, download=False)
    return images[:NUM_IMAGES], labels[:NUM_IMAGES]


def convolve(inputs, weights, stride):
    """Return the VALID convolution of (N, H, W, C) `inputs` with HWIO `weights`, by im2col."""
    batch, height, width, channels = inputs.shape
    kernel_size, _, _, out_channels = weights.shape
    indices = im2col_indices((height, width, channels), kernel_size, stride)
    out_size = (height - kernel_size) // stride + 1
    patches = inputs.reshape(batch, -1)[:, indices]
    return (patches @ weights.reshape(-1, out_channels)).reshape(batch, out_size, out_size, out_channels)


def random_params(arch, k, images, seed=0):
    """Return float32 parameters for `arch` whose batch norms fit the ANN's activations on `images`."""
    rng = np.random.default_rng(seed)
    params = []
    activations = images.astype(np.float64)
    for layer, (input_shape, _) in zip(arch.hidden, arch.layer_shapes()):
        fan_in = layer.kernel_size ** 2 * input_shape[2]
        shape = (layer.kernel_size, layer.kernel_size, input_shape[2], layer.out_channels)
        weights = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        z = convolve(activations, weights.astype(np.float64), layer.stride)

        channels = layer.out_channels
        beta = rng.normal(0.0, 0.3, channels).astype(np.float32)
        gamma = rng.uniform(0.5, 1.5, channels)
        gamma[rng.choice(channels, 3, replace=False)] *= -1.0
        gamma[0] = 0.0
        gamma = gamma.astype(np.float32)
        mean = z.mean(axis=(0, 1, 2)).astype(np.float32)
        variance = (z.var(axis=(0, 1, 2)) + 1e-3).astype(np.float32)
        params += [weights, beta, gamma, mean, variance]

        neurons = ReferenceNeurons(beta, gamma, mean, variance, BN_EPSILON, k)
        activations = neurons.target_counts(z * 2.0 ** k) / 2.0 ** k

    output_shape = (arch.flat_features(), arch.num_classes)
    output = rng.standard_normal(output_shape) * np.sqrt(1.0 / output_shape[0])
    params.append(output.astype(np.float32))
    return params


def make_model(arch, k, images):
    params = random_params(arch, k, images)
    metadata = {"architecture": arch.name, "k": k, "bn_epsilon": BN_EPSILON}
    return Model(params=params, metadata=metadata, path="<random parameters>")


def test_im2col_matches_loop_convolution():
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((2, 7, 7, 3))
    weights = rng.standard_normal((3, 3, 3, 4))
    for stride in (1, 2):
        out_size = (7 - 3) // stride + 1
        expected = np.zeros((2, out_size, out_size, 4))
        for row in range(out_size):
            for column in range(out_size):
                window = inputs[:, row * stride:row * stride + 3, column * stride:column * stride + 3, :]
                expected[:, row, column, :] = np.einsum("nijc,ijco->no", window, weights)
        np.testing.assert_allclose(convolve(inputs, weights, stride), expected, rtol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_reference_neurons_match_quantized_batch_norm(k):
    rng = np.random.default_rng(2)
    channels = 6
    beta = rng.normal(0.0, 0.5, channels)
    gamma = np.array([1.2, 0.7, -0.9, 1.0, -1.5, 0.0])
    mean = rng.normal(0.0, 0.3, channels)
    variance = rng.uniform(0.2, 2.0, channels)
    z = rng.normal(0.0, 1.5, (1000, channels))
    neurons = ReferenceNeurons(beta, gamma, mean, variance, BN_EPSILON, k)

    normalized = gamma * (z - mean) / np.sqrt(variance + BN_EPSILON) + beta
    expected = np.floor(2.0 ** k * np.maximum(normalized, 0.0) + 0.5 + QUANTIZER_OFFSET)
    counts = neurons.target_counts(2.0 ** k * z)

    np.testing.assert_array_equal(counts, expected)
    assert np.all(counts[:, 5] == np.floor(2.0 ** k * max(beta[5], 0.0) + 0.5 + QUANTIZER_OFFSET))
    assert counts.max() >= 2 ** k, "the samples reach no activation above 1"


def test_reference_fan_out_counts_windows():
    neurons = ReferenceNeurons(np.zeros(2), np.ones(2), np.zeros(2), np.ones(2), BN_EPSILON, 0)

    overlapping = ReferenceLayer(np.zeros((3, 3, 1, 2)), 1, neurons, (5, 5, 1))
    fan_out = overlapping.fan_out.reshape(5, 5)
    assert fan_out[0, 0] == 1 * 2
    assert fan_out[0, 2] == 3 * 2
    assert fan_out[2, 2] == 9 * 2

    pooling = ReferenceLayer(np.zeros((2, 2, 3, 2)), 2, neurons, (4, 4, 3))
    assert np.all(pooling.fan_out == 2)


@pytest.mark.parametrize("arch", [LENET, MLP], ids=lambda arch: arch.name)
@pytest.mark.parametrize("k", [0, 2])
def test_reference_logs_equal_simulate(arch, k, sample_images):
    images, labels = sample_images
    model = make_model(arch, k, images)
    time_steps, batch_size = 6, 8

    project = simulate(model, images, labels, time_steps, batch_size, progress=False).logs
    reference = simulate_reference(model, images, labels, time_steps, batch_size)

    for name in LOG_NAMES:
        assert reference[name].dtype == np.int64, name
        assert reference[name].shape == (3, time_steps), name
        np.testing.assert_array_equal(reference[name], project[name], err_msg=name)
    # The comparison only means something if the network is active.
    final = {name: reference[name][:, -1].sum() for name in LOG_NAMES}
    assert final["spike_num"] > 0
    assert final["spike_num"] > final["spike_collect"], "no negative spikes"
    assert final["sop_num"] > 0


def test_compare_logs_reports_first_difference():
    same = {f"log_{name}": np.arange(6).reshape(2, 3) for name in LOG_NAMES}
    changed = {key: value.copy() for key, value in same.items()}
    changed["log_sop_num"][1, 2] = 99

    assert benchmark_simulation.compare_logs(same, same) == []
    problems = benchmark_simulation.compare_logs(same, changed)
    assert len(problems) == 1
    assert "sop_num" in problems[0]
    assert "batch 1, time step 2" in problems[0]


@pytest.fixture
def lenet_model_dir(tmp_path, sample_images):
    """Return a folder with a random LeNet model at k=1."""
    images, _ = sample_images
    model_dir = tmp_path / "model"
    save_model(str(model_dir / MODEL_FILE_NAME), LENET, random_params(LENET, 1, images),
               {"k": 1, "bn_epsilon": BN_EPSILON})
    return model_dir


def test_benchmark_script_runs(lenet_model_dir, data_dir):
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "benchmark_simulation.py"),
         "--model_dir", str(lenet_model_dir), "--k", "1", "--num_images", str(NUM_IMAGES),
         "--time_steps", "5", "--batch_size", "10", "--data_dir", data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    output = completed.stdout
    assert completed.returncode == 0, f"{output}\n{completed.stderr}"
    assert "ratio reference / project (wall time):" in output
    assert "logs identical" in output
    assert "NumPy" in output
    assert "first batch, untimed:" in output


@pytest.mark.slow
def test_profile_kernel_names_functions(tmp_path, lenet_model_dir, data_dir, perf_recording):
    """benchmarks/profile_kernel.py: perf's report names the kernel's compiled functions."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "profile_kernel.py"),
         "--model_dir", str(lenet_model_dir), "--num_images", "200", "--seconds", "1",
         "--data_dir", data_dir, "--output", str(tmp_path / "kernel.perf")],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    output = completed.stdout
    assert completed.returncode == 0, f"{output}\n{completed.stderr}"
    assert "wrote /tmp/perf-" in output
    assert "event_kernels8_deliver" in output


def test_spike_runs_count_deliveries():
    """benchmarks/spike_runs.py: single spikes cost 1 delivery, longer runs 2, or 1 up to the last step."""
    from spike_runs import run_deliveries

    # One neuron per column, over 6 time steps.
    columns = [
        [1, 0, 0, 0, 0, 0],    # a single spike: 1
        [1, 1, 1, 0, 0, 0],    # a run of 3 that ends: 2
        [0, 0, 0, 1, 1, 1],    # a run that lasts to the last step: 1
        [1, 1, -1, -1, 1, 0],  # runs of 2, 2 and 1: 2 + 2 + 1
        [0, 0, 0, 0, 0, 0],    # silent: 0
    ]
    train = np.array(columns, dtype=np.int8).T.reshape(6, 1, 1, 1, len(columns))
    spikes, runs, deliveries = run_deliveries(train)
    assert spikes.ravel().tolist() == [1, 3, 3, 5, 0]
    assert runs.ravel().tolist() == [1, 1, 1, 3, 0]
    assert deliveries.ravel().tolist() == [1, 2, 1, 5, 0]


def test_activation_counts_statistics():
    """benchmarks/activation_counts.py: mean, 99.9th percentile and maximum of the non-zero counts."""
    from activation_counts import count_statistics

    mean, high, largest = count_statistics(np.array([[0.0, 1.0], [2.0, 6.0]]))
    assert mean == 3.0
    assert 5.9 < high < 6.0
    assert largest == 6.0
    assert count_statistics(np.zeros((2, 3))) == (0.0, 0.0, 0.0)


def test_deliver_rates_script_runs():
    """benchmarks/deliver_rates.py times the delivery of each LeNet-shaped buffer."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "deliver_rates.py"), "--calls", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["pool1", "conv2", "fc1"]
    # pool1 reaches one output position per spike, conv2 several.
    assert "750 spikes,   750 (spike, output position) pairs" in lines[0]
    assert all(line.endswith("G SOP/s") for line in lines)


def test_kernel_speed_script_runs(lenet_model_dir, data_dir):
    """benchmarks/kernel_speed.py prints one time per image for each run."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "kernel_speed.py"), "--model_dir",
         str(lenet_model_dir), "--num_images", str(NUM_IMAGES), "--repeats", "2",
         "--time_steps", "5", "--batch_size", "10", "--data_dir", data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("run 1: ")
    assert f"ms per image ({NUM_IMAGES} images, 5 steps, batch size 10)" in lines[1]


def test_activation_counts_script_runs(lenet_model_dir, data_dir):
    """benchmarks/activation_counts.py prints one line per hidden layer of the model."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "activation_counts.py"), "--model_dir",
         str(lenet_model_dir), "--num_images", str(NUM_IMAGES), "--data_dir", data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(f"LeNet k=1, {NUM_IMAGES} test images")
    assert [line.split()[0] for line in lines[1:]] == [layer.name for layer in LENET.hidden]


@pytest.mark.parametrize("script", ["activation_counts.py", "floor.py", "kernel_speed.py",
                                    "spike_runs.py"])
def test_analysis_script_reports_missing_model(script, tmp_path, data_dir):
    """The analysis scripts print the loader's message, not a traceback, for a bad --model_dir."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, script), "--model_dir", str(tmp_path),
         "--data_dir", data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    assert completed.stderr.startswith(
        f"error: model file not found: {tmp_path / MODEL_FILE_NAME}"), completed.stderr


def test_activation_counts_rejects_full_precision(data_dir):
    """A full-precision model gets exit code 1 and one message, as in the Spiking scripts."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "activation_counts.py"), "--model_dir",
         os.path.join(REPO, "pretrained", "LeNet", "fp32"), "--data_dir", data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 1, completed.stderr
    assert "contains a full-precision model: pass the folder of a quantized one" in completed.stderr
    assert "usage:" not in completed.stderr


@pytest.mark.parametrize("module, script", [("model_options.py", "kernel_speed.py"),
                                            ("reference_simulator.py", "benchmark_simulation.py")])
def test_benchmark_module_names_script(module, script):
    """Run as scripts, the two modules of benchmarks/ name the script to run instead."""
    completed = subprocess.run([sys.executable, os.path.join(BENCHMARK_DIR, module), "--help"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 1
    assert f"{module} is a module" in completed.stderr
    assert script in completed.stderr
    assert completed.stdout == ""


def test_dense_bf16_script_runs():
    """benchmarks/dense_bf16.py times one exact product per LeNet layer that receives spikes."""
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARK_DIR, "dense_bf16.py"), "--batch_size", "1",
         "--time_steps", "2", "--repeats", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "1 images, 2 steps, 4 weight digits"
    assert [line.split()[0] for line in lines[1:-1]] == [layer.name for layer in LENET.hidden[1:]]
    # conv2: 8 x 8 output positions for 2 steps, a 5 x 5 x 32 window, 4 digits of 64 channels.
    assert lines[2].startswith("conv2      128 x  800 by  800 x  256:")
    assert all(line.endswith(", exact") for line in lines[1:-1])
    assert lines[-1].startswith("products of all layers: ")
    assert lines[-1].endswith(" ms per image")
