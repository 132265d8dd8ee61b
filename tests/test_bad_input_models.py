"""Bad model metadata, damaged model files and manifests, and bad options of the benchmark scripts.

The scripts run as subprocesses, as a user runs them, on models and data written
into pytest's temporary folders. A handled error prints one message and no
traceback, exits with a non-zero code and writes nothing. The reproduce tests point
`reproduce.MANIFEST` to a temporary file, so they never touch the real
pretrained/manifest.json.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ann2snn import model_file, reproduce
from ann2snn.architectures import MLP
from ann2snn.data import load_test_set
from ann2snn.model_file import MODEL_FILE_NAME, ModelFileError, load_model, save_model
from ann2snn.spiking_utils import SpikingNetwork

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_DIR = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARK_DIR))

import spike_runs  # noqa: E402
from test_errors import assert_usage_error  # noqa: E402  (pytest puts tests/ on sys.path)

VALID_METADATA = {"k": 1, "bn_epsilon": 1e-5, "test_accuracy": 0.9, "num_test_images": 10000,
                  "epochs": 3, "seed": 0}
NUM_IMAGES = 20


def write_model(folder, **changes):
    """Write an MLP at k=1 with small random parameters and VALID_METADATA updated by `changes`.

    Returns the folder. The values of `changes` are written as given, also invalid ones.
    """
    rng = np.random.default_rng(0)
    params = []
    for name, shape in MLP.param_shapes():
        if name.endswith(("/gamma", "/moving_variance")):
            params.append(np.ones(shape))
        else:
            params.append(rng.normal(0.0, 0.1, shape))
    folder = Path(folder)
    save_model(str(folder / MODEL_FILE_NAME), MLP, params, dict(VALID_METADATA, **changes))
    return folder


def run(script, *args, cwd=REPO):
    command = [sys.executable, str(script), *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, exit_code, *fragments):
    """Check the exit code, a stderr of one line without a traceback, and each fragment in it."""
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"


@pytest.fixture(scope="module")
def data_dir(fashion_mnist_dir):
    return fashion_mnist_dir


@pytest.fixture(scope="module")
def truncated_data_dir(tmp_path_factory, data_dir):
    """Return a data folder whose test images end after 10,000 bytes."""
    folder = tmp_path_factory.mktemp("truncated_data")
    shutil.copytree(data_dir, folder, dirs_exist_ok=True)
    images = next(folder.rglob("t10k-images-idx3-ubyte.gz"))
    images.write_bytes(images.read_bytes()[:10000])
    return folder


# --- Metadata checked by load_model ------------------------------------------------


INVALID_METADATA = {
    "bn_epsilon text": ("bn_epsilon", "abc", '"abc"'),
    "bn_epsilon null": ("bn_epsilon", None, "null"),
    "bn_epsilon negative": ("bn_epsilon", -1, "-1"),
    "bn_epsilon zero": ("bn_epsilon", 0, "0"),
    "bn_epsilon infinite": ("bn_epsilon", float("inf"), "Infinity"),
    "bn_epsilon boolean": ("bn_epsilon", True, "true"),
    "bn_epsilon beyond float range": ("bn_epsilon", 10 ** 400, str(10 ** 400)),
    "test_accuracy above 1": ("test_accuracy", 1.5, "1.5"),
    "test_accuracy text": ("test_accuracy", "abc", '"abc"'),
    "test_accuracy NaN": ("test_accuracy", float("nan"), "NaN"),
    "test_accuracy negative": ("test_accuracy", -0.1, "-0.1"),
    "epochs zero": ("epochs", 0, "0"),
    "epochs fraction": ("epochs", 1.5, "1.5"),
    "num_test_images zero": ("num_test_images", 0, "0"),
    "num_test_images above test set": ("num_test_images", 20000, "20000"),
    "num_test_images text": ("num_test_images", "10000", '"10000"'),
    "seed null": ("seed", None, "null"),
    "seed negative": ("seed", -1, "-1"),
    "seed above 2^32": ("seed", 2 ** 32, str(2 ** 32)),
    "k above maximum": ("k", 99, "99"),
    "k boolean": ("k", True, "true"),
}


@pytest.mark.parametrize("case", sorted(INVALID_METADATA))
def test_load_model_rejects_metadata(tmp_path, case):
    field, value, value_json = INVALID_METADATA[case]
    folder = write_model(tmp_path, **{field: value})
    path = folder / MODEL_FILE_NAME

    with pytest.raises(ModelFileError) as raised:
        load_model(str(path))
    message = str(raised.value)
    assert str(path) in message
    assert f"invalid metadata: {field} is {value_json}, expected" in message


VALID_VALUES = {
    "test_accuracy null": {"test_accuracy": None},
    "test_accuracy 0": {"test_accuracy": 0},
    "test_accuracy 1": {"test_accuracy": 1.0},
    "num_test_images null": {"num_test_images": None},
    "epochs null": {"epochs": None},
    "k null": {"k": None},
    "bn_epsilon integer": {"bn_epsilon": 1},
}


@pytest.mark.parametrize("case", sorted(VALID_VALUES))
def test_load_model_accepts_metadata(tmp_path, case):
    changes = VALID_VALUES[case]
    model = load_model(str(write_model(tmp_path, **changes) / MODEL_FILE_NAME))
    for field, value in changes.items():
        assert model.metadata[field] == value


@pytest.mark.parametrize("architecture", [["MLP"], {"name": "MLP"}, "ResNet"])
def test_load_model_rejects_architecture(tmp_path, architecture):
    path = write_model(tmp_path, architecture=architecture) / MODEL_FILE_NAME

    with pytest.raises(ModelFileError) as raised:
        load_model(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: the metadata names architecture {architecture!r}")
    assert "expected one of ['LeNet', 'MLP']" in message


def test_load_model_accepts_missing_fields(tmp_path):
    """The readers use defaults for absent fields, such as bn_epsilon 1e-5."""
    folder = write_model(tmp_path)
    path = folder / MODEL_FILE_NAME
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["metadata"] = np.array(json.dumps({"architecture": "MLP", "k": 1}))
    np.savez(path, **arrays)

    assert load_model(str(path)).k == 1


@pytest.mark.parametrize("field, value, exit_code, script", [
    ("bn_epsilon", "abc", 1, "MLP/Spiking_MLP_FashionMNIST.py"),
    ("bn_epsilon", -1, 1, "MLP/Spiking_MLP_FashionMNIST.py"),
    ("test_accuracy", 1.5, 1, "MLP/Spiking_MLP_FashionMNIST.py"),
    ("bn_epsilon", None, 1, "benchmarks/activation_counts.py"),
    ("bn_epsilon", "abc", 2, "benchmarks/benchmark_simulation.py"),
])
def test_script_rejects_bad_metadata(tmp_path, data_dir, field, value, exit_code, script):
    folder = write_model(tmp_path / "model", **{field: value})
    before = (folder / MODEL_FILE_NAME).read_bytes()
    figs = tmp_path / "figs"
    options = ["--model_dir", folder, "--data_dir", data_dir, "--num_images", NUM_IMAGES]
    if script.startswith("MLP/"):
        options += ["--k", 1, "--time_steps", 5, "--figs_dir", figs]
    if script.endswith("benchmark_simulation.py"):
        options += ["--arch", "MLP", "--k", 1, "--time_steps", 5]

    result = run(REPO / script, *options, cwd=REPO / script.split("/")[0])
    assert_one_line_error(result, exit_code, str(folder / MODEL_FILE_NAME),
                          f"invalid metadata: {field} is {json.dumps(value)}")
    assert "subprocess failed" not in result.stderr
    assert (folder / MODEL_FILE_NAME).read_bytes() == before
    assert not figs.exists()


# --- What the message of a damaged model file advises ------------------------------


def truncate(path):
    path.write_bytes(path.read_bytes()[:5000])


def test_damaged_model_without_checkpoint_advice(tmp_path):
    folder = write_model(tmp_path)
    truncate(folder / MODEL_FILE_NAME)
    with pytest.raises(ModelFileError) as raised:
        load_model(str(folder / MODEL_FILE_NAME))
    message = str(raised.value)
    assert "--resume True" not in message
    assert f"No checkpoint is in {folder}" in message
    assert "--mode training" in message


def test_damaged_model_with_checkpoint_advice(tmp_path):
    folder = write_model(tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model_fashion_mnist_advanced.ckpt"\n')
    truncate(folder / MODEL_FILE_NAME)
    with pytest.raises(ModelFileError) as raised:
        load_model(str(folder / MODEL_FILE_NAME))
    assert f"--resume True --mode inference --model_dir {folder}" in str(raised.value)


def test_damaged_shipped_model_advice(tmp_path, monkeypatch):
    """A damaged model in pretrained/, which ships no checkpoints, is restored with git."""
    pretrained = tmp_path / "repository" / "pretrained"
    folder = write_model(pretrained / "MLP" / "k0")
    truncate(folder / MODEL_FILE_NAME)
    monkeypatch.setattr(model_file, "PRETRAINED_DIR", str(pretrained))

    with pytest.raises(ModelFileError) as raised:
        load_model(str(folder / MODEL_FILE_NAME))
    message = str(raised.value)
    assert (f"git -C {tmp_path / 'repository'} checkout -- "
            f"pretrained/MLP/k0/{MODEL_FILE_NAME}") in message
    assert "--resume True" not in message


# --- The manifest of reproduce.py ---------------------------------------------------


DAMAGED_MANIFESTS = {
    "truncated": ('{"MLP/k0": {"architecture": "ML', "is damaged: not valid JSON"),
    "array": ("[]", "expected a JSON object of models, found a JSON array"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_MANIFESTS))
def test_manifest_only_rejects_damaged_manifest(tmp_path, monkeypatch, damage):
    text, found = DAMAGED_MANIFESTS[damage]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(text)
    monkeypatch.setattr(reproduce, "MANIFEST", str(manifest))

    with pytest.raises(SystemExit) as raised:
        reproduce.main(["--manifest_only", "--only", "MLP", "--keys", "k0"])
    message = str(raised.value.code)
    assert message.startswith(f"error: the manifest {manifest} ")
    assert found in message
    assert "--manifest_only" in message
    assert manifest.read_text() == text


def test_reproduce_checks_manifest_before_training(tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("[]")
    monkeypatch.setattr(reproduce, "MANIFEST", str(manifest))
    monkeypatch.setattr(reproduce, "is_finished", lambda arch, key, epochs: False)
    trained = []
    monkeypatch.setattr(reproduce, "train", lambda *args: trained.append(args))

    with pytest.raises(SystemExit, match="found a JSON array"):
        reproduce.main(["--only", "MLP", "--keys", "k0", "--skip_spiking"])
    assert trained == []


# --- benchmark_simulation.py: bad data ------------------------------------------------


def test_benchmark_simulation_truncated_data(tmp_path, truncated_data_dir):
    folder = write_model(tmp_path / "model")
    result = run(BENCHMARK_DIR / "benchmark_simulation.py", "--model_dir", folder, "--arch", "MLP",
                 "--k", 1, "--num_images", NUM_IMAGES, "--time_steps", 5,
                 "--data_dir", truncated_data_dir)
    assert_one_line_error(result, 2, "t10k-images-idx3-ubyte.gz is truncated")
    assert "subprocess failed" not in result.stderr


def test_benchmark_worker_reports_one_line(tmp_path, truncated_data_dir):
    """A worker whose data became invalid after the parent's check prints one line, no traceback."""
    folder = write_model(tmp_path / "model")
    result = run(BENCHMARK_DIR / "benchmark_simulation.py", "--model_dir", folder, "--arch", "MLP",
                 "--k", 1, "--num_images", NUM_IMAGES, "--time_steps", 5,
                 "--data_dir", truncated_data_dir, "--worker", "project",
                 "--result_file", tmp_path / "result.npz")
    assert_one_line_error(result, 1, "t10k-images-idx3-ubyte.gz is truncated")
    assert not (tmp_path / "result.npz").exists()


# --- Upper bounds of the benchmark options ---------------------------------------------


TOO_MANY_STEPS = {
    "spike_runs.py": [],
    "kernel_speed.py": [],
    "benchmark_simulation.py": ["--arch", "MLP"],
    "dense_bf16.py": None,
}


@pytest.mark.parametrize("steps", ["1001", "99999999999999999999"])
@pytest.mark.parametrize("script", sorted(TOO_MANY_STEPS))
def test_benchmark_rejects_too_many_steps(tmp_path, script, steps):
    options = ["--time_steps", steps]
    if TOO_MANY_STEPS[script] is not None:
        options += ["--model_dir", write_model(tmp_path), "--k", 1, "--data_dir", tmp_path / "data",
                    *TOO_MANY_STEPS[script]]
    result = run(BENCHMARK_DIR / script, *options)
    assert_usage_error(result, f"argument --time_steps: invalid value {steps}: use at most 1000")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("script", ["floor.py", "spike_runs.py", "activation_counts.py",
                                    "kernel_speed.py"])
def test_benchmark_rejects_images_beyond_test_set(tmp_path, script):
    result = run(BENCHMARK_DIR / script, "--model_dir", write_model(tmp_path),
                 "--data_dir", tmp_path / "data", "--num_images", 20000)
    assert_usage_error(result, "argument --num_images: invalid value 20000: use at most 10000 "
                               "images: the test set has 10000")
    assert not (tmp_path / "data").exists()


def test_dense_bf16_rejects_batch_beyond_memory():
    if not os.path.isfile("/proc/meminfo"):
        pytest.skip("the memory check reads /proc/meminfo (Linux)")
    result = run(BENCHMARK_DIR / "dense_bf16.py", "--batch_size", 10 ** 7)
    assert_usage_error(result, "--batch_size 10000000 and --time_steps 20 need about",
                       "GiB of memory are available")


def test_floor_prints_images_used(tmp_path, data_dir):
    result = run(BENCHMARK_DIR / "floor.py", "--model_dir", write_model(tmp_path), "--k", 1,
                 "--data_dir", data_dir, "--num_images", 30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MLP k=1, 30 images, 20 time steps\n")


# --- spike_runs.py counts step by step ------------------------------------------------


def runs_by_definition(column):
    """Return (spikes, runs, deliveries) of one neuron's spikes over time, counted run by run."""
    spikes = runs = deliveries = 0
    step = 0
    while step < len(column):
        if column[step] == 0:
            step += 1
            continue
        end = step
        while end + 1 < len(column) and column[end + 1] == column[step]:
            end += 1
        length = end - step + 1
        spikes += length
        runs += 1
        if length == 1 or end == len(column) - 1:
            deliveries += 1
        else:
            deliveries += 2
        step = end + 1
    return spikes, runs, deliveries


def test_run_counter_matches_definition():
    rng = np.random.default_rng(1)
    train = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(12, 3, 2, 2, 5), p=[0.2, 0.4, 0.4])
    spikes, runs, deliveries = spike_runs.run_deliveries(train)

    for index in np.ndindex(train.shape[1:]):
        expected = runs_by_definition(train[(slice(None), *index)].tolist())
        assert (spikes[index], runs[index], deliveries[index]) == expected, index


def test_count_runs_same_for_any_chunk(tmp_path, monkeypatch, data_dir):
    """Images simulated in chunks give the same counts as all at once."""
    model = load_model(str(write_model(tmp_path) / MODEL_FILE_NAME))
    images, _ = load_test_set(str(data_dir), download=False)
    images = images[:7]
    network = SpikingNetwork(model.architecture, model.params, model.k, 1e-5)

    whole = spike_runs.count_runs(network, images, 6)
    monkeypatch.setattr(spike_runs, "IMAGES_PER_CHUNK", 3)
    chunked = spike_runs.count_runs(network, images, 6)
    for whole_layer, chunked_layer in zip(whole, chunked):
        for whole_counts, chunked_counts in zip(whole_layer, chunked_layer):
            assert np.array_equal(whole_counts, chunked_counts)
    assert whole[0][0].sum() > 0


# --- profile_kernel.py -------------------------------------------------------------


@pytest.mark.slow
def test_profile_kernel_no_samples(tmp_path, data_dir, perf_recording):
    """A simulation that ends before perf records fails with one message and removes its map."""
    process = subprocess.Popen(
        [sys.executable, str(BENCHMARK_DIR / "profile_kernel.py"), "--model_dir",
         write_model(tmp_path / "model"), "--num_images", "1", "--seconds", "0.5",
         "--data_dir", data_dir, "--output", tmp_path / "kernel.perf"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    assert_one_line_error(result, 1, "perf recorded no samples", "--num_images")
    assert f"wrote /tmp/perf-{process.pid}.map" in stdout
    assert not os.path.exists(f"/tmp/perf-{process.pid}.map")
