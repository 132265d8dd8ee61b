"""The shipped models in pretrained/: present, unchanged, and converting exactly."""

import json
import os
import re
import shutil

import pytest

from ann2snn.architectures import get_architecture
from ann2snn.data import load_test_set
from ann2snn.model_file import load_model
from ann2snn import reproduce
from ann2snn.reproduce import sha256
from ann2snn.simulation import simulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(REPO, "pretrained", "manifest.json")
with open(MANIFEST) as stream:
    ENTRIES = json.load(stream)
NUM_IMAGES = 100
# The slowest shipped model (MLP, k=2) settles by step 34 on the full test set.
TIME_STEPS = 48


@pytest.fixture(scope="module")
def test_images(tmp_path_factory):
    images, labels = load_test_set(str(tmp_path_factory.mktemp("data")))
    return images[:NUM_IMAGES], labels[:NUM_IMAGES]


def test_manifest_lists_shipped_models():
    shipped = {"MLP/k0", "MLP/k1", "MLP/k2", "MLP/fp32", "LeNet/k0", "LeNet/k1", "LeNet/k2", "LeNet/fp32"}
    assert shipped <= set(ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_model_matches_manifest(name):
    entry = ENTRIES[name]
    path = os.path.join(REPO, entry["file"])
    assert sha256(path) == entry["sha256"]
    model = load_model(path, arch=get_architecture(entry["architecture"]), k=entry["k"])
    assert model.metadata["test_accuracy"] == entry["test_accuracy"]
    assert model.metadata["epochs"] == entry["epochs"]


@pytest.mark.parametrize("name", sorted(n for n, e in ENTRIES.items() if e["k"] is not None))
def test_model_converts_without_mismatch(name, test_images):
    entry = ENTRIES[name]
    model = load_model(os.path.join(REPO, entry["file"]))
    images, labels = test_images
    result = simulate(model, images, labels, TIME_STEPS, 50, verify=True, progress=False)
    assert set(result.mismatch_counts.values()) == {0}
    assert result.last_spike_step.max() < TIME_STEPS - 1
    assert result.logs["accuracy"][:, -1].sum() == result.ann_correct


def test_reproduce_doubles_unsettled_time_steps(tmp_path):
    """reproduce.simulate reruns a Spiking script whose counts have not settled, at twice the steps."""
    folder = tmp_path / "model"
    folder.mkdir()
    entry = ENTRIES["MLP/k2"]
    shutil.copy(os.path.join(REPO, entry["file"]), folder)
    figs = tmp_path / "figs"
    steps = reproduce.simulate("MLP", "k2", str(tmp_path / "data"), folder=str(folder),
                               figs_dir=str(figs), time_steps=2, options=("--num_images", "50"))

    log = (folder / "spiking.log").read_text()
    tried = [int(value) for value in re.findall(r"--time_steps (\d+)", log)]
    assert tried == [2 ** power for power in range(1, len(tried) + 1)]
    assert len(tried) >= 2
    assert tried[-1] == steps
    for unsettled in tried[:-1]:
        assert f"spikes settled not within the {unsettled} steps" in log
    with open(figs / "k2" / "summary.json") as stream:
        summary = json.load(stream)
    assert summary["time_steps"] == steps
    # The neurons settle within this run, and not within the previous one.
    assert steps // 2 < summary["settled_step"] <= steps


def test_reproduce_stops_on_missing_model(tmp_path):
    """A Spiking run that fails before writing its logs, here for a missing model, is not retried."""
    empty = tmp_path / "model"
    empty.mkdir()
    with pytest.raises(SystemExit, match="failed with exit code 1 before writing its logs"):
        reproduce.simulate("MLP", "k2", str(tmp_path / "data"), folder=str(empty),
                           figs_dir=str(tmp_path / "figs"), time_steps=2)
    log = (empty / "spiking.log").read_text()
    assert len(re.findall(r"--time_steps", log)) == 1


def test_manifest_only_uses_recorded_seed(tmp_path, monkeypatch):
    """--manifest_only rebuilds an entry from the model file and ignores --seed."""
    monkeypatch.setattr(reproduce, "MANIFEST", str(tmp_path / "manifest.json"))
    assert reproduce.main(["--manifest_only", "--only", "MLP", "--keys", "k0", "--seed", "7"]) == 0

    with open(tmp_path / "manifest.json") as stream:
        rebuilt = json.load(stream)
    assert list(rebuilt) == ["MLP/k0"]
    assert "--seed 0 " in rebuilt["MLP/k0"]["command"]
    assert rebuilt["MLP/k0"] == ENTRIES["MLP/k0"]


def test_reproduce_stops_at_damaged_model(tmp_path, monkeypatch):
    """A model file that exists but cannot be read stops the run, so it is not silently retrained."""
    monkeypatch.setattr(reproduce, "PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setattr(reproduce, "MANIFEST", str(tmp_path / "manifest.json"))
    trained = []
    monkeypatch.setattr(reproduce, "train", lambda *args: trained.append(args))
    damaged = tmp_path / "MLP" / "k0" / "model_fashion_mnist.npz"
    damaged.parent.mkdir(parents=True)
    with open(os.path.join(REPO, "pretrained", "MLP", "k0", "model_fashion_mnist.npz"), "rb") as stream:
        damaged.write_bytes(stream.read(500))
    before = damaged.read_bytes()

    with pytest.raises(SystemExit) as stopped:
        reproduce.main(["--only", "MLP", "--keys", "k0", "--skip_spiking"])

    message = str(stopped.value)
    assert "the file is truncated" in message
    assert "This script trains a model only where none exists" in message
    assert f"git -C {reproduce.REPO_ROOT} checkout -- " in message
    assert trained == []
    assert damaged.read_bytes() == before
