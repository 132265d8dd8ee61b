"""Bad input to the Quant_ and FP32_ scripts: damaged record and state files, divergence, wrong k.

Every case runs a real MLP script as a subprocess, with --model_dir and --figs_dir
inside pytest's temporary folders. A handled error exits with 1, or with 2 for a usage
error, and prints one message and no traceback. The run whose record is damaged after
the model file is written rewrites that file, and every other failed run leaves the
files that existed before unchanged.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ann2snn import training
from ann2snn.architectures import MLP
from ann2snn.logs import ANN_ACCURACY_NAME
from ann2snn.model_file import MODEL_FILE_NAME, load_model

import test_errors  # pytest puts tests/ on sys.path

REPO = Path(__file__).resolve().parents[1]
QUANT_SCRIPT = "Quant_MLP_FashionMNIST.py"
FP32_SCRIPT = "FP32_MLP_FashionMNIST.py"
SLICE_OPTIONS = ["--batch_size", 100, "--num_train_images", 400, "--num_eval_images", 200]
FINAL_STATE_LINE = f'model_checkpoint_path: "{training.CHECKPOINT_PREFIX}"'

# Damaged contents of ann_accuracy.json, each as bytes and a fragment of the expected message.
DAMAGED_RECORDS = {
    "truncated": (b'{\n  "k0": {\n    "accuracy": 0.5,\n    "model": "../mo', "invalid JSON"),
    "list": (b'[{"accuracy": 0.5}]\n', "expected a JSON object, got list"),
    "random bytes": (bytes(range(128, 256)) * 4, "not UTF-8 text"),
}
# Damaged contents of the checkpoint state file, each with the expected reason.
DAMAGED_STATES = {
    "empty": (b"", "it is empty"),
    "random bytes": (bytes(range(255, 127, -1)) * 2, "it is not UTF-8 text"),
    "not a state": (b"checkpoint of epoch 3\n",
                    "it is not a checkpoint state in TensorFlow's text format"),
}


def run_script(script, *args, runner=None):
    """Run MLP/`script` with `args`, through the Python file `runner` if given."""
    prefix = [str(runner)] if runner is not None else []
    command = [sys.executable, *prefix, str(REPO / "MLP" / script), *map(str, args)]
    return subprocess.run(command, cwd=REPO / "MLP", capture_output=True, text=True,
                          timeout=300)


def assert_clean_error(result, *fragments):
    """Assert exit code 1, no traceback and each of `fragments` in the message."""
    test_errors.assert_clean_error(result, 1, *fragments)


def file_contents(folder):
    """Return {relative path: bytes} of every file under `folder` ({} when it is missing)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def train(root, script, *extra):
    """Train the MLP with `script` for one epoch on a data slice into root/model and root/figs."""
    result = run_script(script, "--resume", "False", "--n_epoch", 1, *SLICE_OPTIONS,
                        "--data_dir", root / "data", "--model_dir", root / "model",
                        "--figs_dir", root / "figs", *extra)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """Return the folder of a quantized MLP (k=0) trained for one epoch: data/, model/, figs/."""
    return train(tmp_path_factory.mktemp("quantized"), QUANT_SCRIPT, "--k", 0)


@pytest.fixture(scope="module")
def full_precision(quantized, tmp_path_factory):
    """Return the folder of a full-precision MLP trained for one epoch (data from `quantized`)."""
    root = tmp_path_factory.mktemp("full_precision")
    shutil.copytree(quantized / "data", root / "data")
    return train(root, FP32_SCRIPT)


def checkpoint_copy(trained, tmp_path):
    """Copy the checkpoint and npz of `trained` into tmp_path/model and return that folder."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    return model_dir


def resume(trained, model_dir, figs_dir, *extra, script=QUANT_SCRIPT):
    """Run `script` with --resume True on `model_dir`. The Quant_ script also gets --k 0."""
    k_option = ["--k", 0] if script == QUANT_SCRIPT else []
    return run_script(script, *k_option, "--resume", "True", "--n_epoch", 2, *SLICE_OPTIONS,
                      "--data_dir", trained / "data", "--model_dir", model_dir,
                      "--figs_dir", figs_dir, *extra)


# --- ann_accuracy.json ------------------------------------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGED_RECORDS))
def test_damaged_record_stops_inference(quantized, tmp_path, damage):
    content, reason = DAMAGED_RECORDS[damage]
    model_dir = checkpoint_copy(quantized, tmp_path)
    figs_dir = tmp_path / "figs"
    figs_dir.mkdir()
    (figs_dir / ANN_ACCURACY_NAME).write_bytes(content)
    models_before = file_contents(model_dir)

    result = resume(quantized, model_dir, figs_dir, "--mode", "inference")

    assert_clean_error(result, str(figs_dir / ANN_ACCURACY_NAME), reason,
                       "stopped before training or writing anything", "Repair the file",
                       "delete it", "--figs_dir")
    assert file_contents(model_dir) == models_before
    assert file_contents(figs_dir) == {ANN_ACCURACY_NAME: content}


@pytest.mark.parametrize("damage", sorted(DAMAGED_RECORDS))
def test_damaged_record_stops_training(quantized, tmp_path, damage):
    content, reason = DAMAGED_RECORDS[damage]
    figs_dir = tmp_path / "figs"
    figs_dir.mkdir()
    (figs_dir / ANN_ACCURACY_NAME).write_bytes(content)

    result = run_script(QUANT_SCRIPT, "--k", 0, "--resume", "False", "--n_epoch", 1,
                        *SLICE_OPTIONS, "--data_dir", quantized / "data",
                        "--model_dir", tmp_path / "model", "--figs_dir", figs_dir)

    assert_clean_error(result, str(figs_dir / ANN_ACCURACY_NAME), reason)
    assert "epoch 1/1" not in result.stderr, result.stderr
    assert not (tmp_path / "model").exists()
    assert file_contents(figs_dir) == {ANN_ACCURACY_NAME: content}


# A runner script that damages ann_accuracy.json right after the npz is written, as a
# concurrent writer could.
DAMAGING_RUNNER = '''
import os
import runpy
import sys

from ann2snn import training

original_save_model = training.save_model


def save_then_damage(*args, **kwargs):
    original_save_model(*args, **kwargs)
    with open(os.environ["DAMAGED_RECORD"], "wb") as stream:
        stream.write(b'{"k0": ')


training.save_model = save_then_damage
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def test_record_damaged_during_run(quantized, tmp_path, monkeypatch):
    runner = tmp_path / "damaging_runner.py"
    runner.write_text(DAMAGING_RUNNER)
    model_dir = checkpoint_copy(quantized, tmp_path)
    figs_dir = tmp_path / "figs"
    record = figs_dir / ANN_ACCURACY_NAME
    monkeypatch.setenv("DAMAGED_RECORD", str(record))
    figs_dir.mkdir()
    shutil.copyfile(quantized / "figs" / ANN_ACCURACY_NAME, record)

    result = run_script(QUANT_SCRIPT, "--k", 0, "--resume", "True", "--mode", "inference",
                        *SLICE_OPTIONS, "--data_dir", quantized / "data",
                        "--model_dir", model_dir, "--figs_dir", figs_dir, runner=runner)

    assert_clean_error(result, "test accuracy",
                       f"The model was written to {model_dir / MODEL_FILE_NAME}",
                       "the accuracy was not recorded", str(record), "invalid JSON",
                       "--resume True --mode inference")
    assert record.read_bytes() == b'{"k0": '
    assert load_model(str(model_dir / MODEL_FILE_NAME), MLP, k=0).metadata["epochs"] == 1


# --- Checkpoint state file ----------------------------------------------------------------


# The cases cover each kind of damage once and each mode that reads the state file, which
# keeps the run short.
@pytest.mark.parametrize("damage, mode", [("empty", "training"), ("random bytes", "inference"),
                                          ("not a state", "training")])
def test_damaged_state_stops_resume(quantized, tmp_path, damage, mode):
    content, reason = DAMAGED_STATES[damage]
    model_dir = checkpoint_copy(quantized, tmp_path)
    (model_dir / training.CHECKPOINT_STATE_NAME).write_bytes(content)
    before = file_contents(model_dir)

    result = resume(quantized, model_dir, tmp_path / "figs", "--mode", mode)

    request = "--mode inference" if mode == "inference" else "--resume True"
    assert_clean_error(result, f"checkpoint state file {model_dir / 'checkpoint'} is damaged",
                       reason, f"so {request} cannot tell which checkpoint to restore",
                       FINAL_STATE_LINE, "--resume False")
    assert "epoch 2/2" not in result.stderr, result.stderr
    assert file_contents(model_dir) == before
    assert not (tmp_path / "figs").exists()


def test_damaged_state_without_checkpoint_files(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / training.CHECKPOINT_STATE_NAME).write_bytes(b"")

    result = run_script(QUANT_SCRIPT, "--k", 0, "--resume", "True", "--data_dir", tmp_path / "data",
                        "--model_dir", model_dir, "--figs_dir", tmp_path / "figs")

    assert_clean_error(result, "is damaged: it is empty", "Restore it from a copy",
                       "--resume False")
    assert FINAL_STATE_LINE not in result.stderr, result.stderr
    assert file_contents(model_dir) == {training.CHECKPOINT_STATE_NAME: b""}


@pytest.mark.parametrize("damage", ["random bytes"])
def test_damaged_state_replaced_by_fresh_training(quantized, tmp_path, damage):
    content, reason = DAMAGED_STATES[damage]
    model_dir = checkpoint_copy(quantized, tmp_path)
    state_file = model_dir / training.CHECKPOINT_STATE_NAME
    state_file.write_bytes(content)

    result = run_script(QUANT_SCRIPT, "--k", 0, "--resume", "False", "--n_epoch", 1,
                        *SLICE_OPTIONS, "--data_dir", quantized / "data",
                        "--model_dir", model_dir, "--figs_dir", tmp_path / "figs")

    assert result.returncode == 0, result.stderr
    assert f"checkpoint state file {state_file} is damaged ({reason}" in result.stderr
    assert "epoch 1/1" in result.stderr, result.stderr
    assert state_file.read_text().splitlines()[0] == FINAL_STATE_LINE
    assert load_model(str(model_dir / MODEL_FILE_NAME), MLP, k=0).metadata["epochs"] == 1


# --- Diverged training --------------------------------------------------------------------


def test_diverged_epoch_keeps_checkpoint(quantized, tmp_path):
    model_dir = checkpoint_copy(quantized, tmp_path)
    before = file_contents(model_dir)

    result = resume(quantized, model_dir, tmp_path / "figs", "--learning_rate", "1e30")

    assert_clean_error(result, "training diverged in epoch 2", "NaN or Inf parameter values",
                       "This epoch was not saved", "smaller --learning_rate than 1e+30",
                       "still contains epoch 1",
                       "With --resume True training continues after epoch 1")
    assert f"{MODEL_FILE_NAME}: parameter" not in result.stderr, result.stderr
    assert file_contents(model_dir) == before
    assert not (tmp_path / "figs").exists()


def test_diverged_first_epoch_writes_nothing(quantized, tmp_path):
    result = run_script(QUANT_SCRIPT, "--k", 0, "--resume", "False", "--n_epoch", 1,
                        "--learning_rate", "1e30", *SLICE_OPTIONS,
                        "--data_dir", quantized / "data", "--model_dir", tmp_path / "model",
                        "--figs_dir", tmp_path / "figs")

    assert_clean_error(result, "training diverged in epoch 1", "smaller --learning_rate",
                       "nothing was written to")
    assert "--resume True" not in result.stderr, result.stderr
    assert file_contents(tmp_path / "model") == {}
    assert not (tmp_path / "figs").exists()


def write_nan_checkpoint(model_dir):
    """Save an MLP k=0 checkpoint of epoch 1 whose fc1/W is NaN, as a diverged training left it."""
    tf = training._import_tensorflow()
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        graph = training.Graph(MLP, 0, 1e-4)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            weights = graph.parameters[0]
            weights.load(np.full(weights.shape, np.nan, dtype=np.float32), session)
            session.run(graph.set_epoch, feed_dict={graph.next_epoch: 1})
            training.save_checkpoint(session, graph, str(model_dir))


def test_checkpoint_with_nan_rejected(quantized, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_nan_checkpoint(model_dir)
    before = file_contents(model_dir)

    result = resume(quantized, model_dir, tmp_path / "figs", "--mode", "inference")

    checkpoint = model_dir / training.CHECKPOINT_PREFIX
    assert_clean_error(result, f"checkpoint {checkpoint} contains 313600 NaN or Inf parameter "
                               f"values in fc1/W (313600)", "diverged", "--resume False")
    assert file_contents(model_dir) == before
    assert not (tmp_path / "figs").exists()


# --- Checkpoint of another precision ------------------------------------------------------

OTHER_PRECISION_CASES = {
    "fp32 script on k=0": (
        "quantized", FP32_SCRIPT, [],
        ["was trained with k=0, but full precision was requested",
         "Use it with Quant_MLP_FashionMNIST.py --k 0", "FP32_MLP_FashionMNIST.py"]),
    "quant script on fp32": (
        "full_precision", QUANT_SCRIPT, ["--k", 0],
        ["was trained with full precision, but k=0 was requested",
         "No --k matches a full-precision checkpoint", "use it with FP32_MLP_FashionMNIST.py"]),
    "quant script on other k": (
        "quantized", QUANT_SCRIPT, ["--k", 2],
        ["was trained with k=0, but k=2 was requested", "Pass --k 0 to use it",
         "a k=2 checkpoint"]),
}


@pytest.mark.parametrize("case", sorted(OTHER_PRECISION_CASES))
def test_checkpoint_other_precision_advice(request, tmp_path, case):
    fixture, script, options, fragments = OTHER_PRECISION_CASES[case]
    trained = request.getfixturevalue(fixture)
    model_dir = checkpoint_copy(trained, tmp_path)
    before = file_contents(model_dir)

    result = run_script(script, *options, "--resume", "True", "--mode", "inference",
                        *SLICE_OPTIONS, "--data_dir", trained / "data",
                        "--model_dir", model_dir, "--figs_dir", tmp_path / "figs")

    assert_clean_error(result, *fragments)
    assert "Pass the matching --k" not in result.stderr, result.stderr
    assert file_contents(model_dir) == before
    assert not (tmp_path / "figs").exists()


# --- Metadata written by --mode inference --------------------------------------------------


def test_inference_keeps_training_settings(quantized, tmp_path):
    """Inference trains nothing, so its own --learning_rate, --batch_size and --seed are not recorded."""
    model_dir = checkpoint_copy(quantized, tmp_path)
    trained = load_model(str(model_dir / MODEL_FILE_NAME), MLP, k=0).metadata

    result = resume(quantized, model_dir, tmp_path / "figs", "--mode", "inference",
                    "--learning_rate", "0.5", "--batch_size", 7, "--seed", 5)

    assert result.returncode == 0, result.stderr
    written = load_model(str(model_dir / MODEL_FILE_NAME), MLP, k=0).metadata
    for name in training.TRAINING_SETTINGS:
        assert written[name] == trained[name], name
    assert written["learning_rate"] == 1e-4
    assert "training," not in result.stderr, result.stderr


def test_inference_without_model_file_omits_settings(quantized, tmp_path):
    """A model file written again from the checkpoint alone has no training settings to copy."""
    model_dir = checkpoint_copy(quantized, tmp_path)
    (model_dir / MODEL_FILE_NAME).unlink()

    result = resume(quantized, model_dir, tmp_path / "figs", "--mode", "inference", "--seed", 5)

    assert result.returncode == 0, result.stderr
    written = load_model(str(model_dir / MODEL_FILE_NAME), MLP, k=0).metadata
    assert written["epochs"] == 1
    for name in training.TRAINING_SETTINGS:
        assert name not in written, name


def test_state_naming_missing_files_advice(quantized, tmp_path):
    """A state file naming deleted files, next to an intact checkpoint, gets the line to write."""
    model_dir = checkpoint_copy(quantized, tmp_path)
    (model_dir / training.CHECKPOINT_STATE_NAME).write_text('model_checkpoint_path: "gone.ckpt"\n')
    before = file_contents(model_dir)

    result = resume(quantized, model_dir, tmp_path / "figs", "--mode", "inference")

    assert result.returncode == 2, result.stderr
    assert "names no checkpoint whose files exist" in result.stderr
    assert FINAL_STATE_LINE in result.stderr
    assert file_contents(model_dir) == before
