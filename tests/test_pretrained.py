"""The shipped models in pretrained/: present, unchanged, and converting exactly."""

import json
import os

import pytest

from ann2snn.architectures import get_architecture
from ann2snn.data import load_test_set
from ann2snn.model_file import load_model
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
    assert {"MLP/k0", "MLP/k1", "MLP/k2", "MLP/fp32", "LeNet/k0", "LeNet/k1", "LeNet/k2"} <= set(ENTRIES)


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
