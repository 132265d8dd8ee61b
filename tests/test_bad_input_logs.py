"""Bad input around the logs: figs folders of another architecture, invalid summaries,
output paths that are folders and figs folders that cannot be listed.

Script cases run a real script of MLP/ as a subprocess with the pretrained MLP k0 model
and the repository's data, on figs folders inside pytest's temporary folders. A handled
error prints one message and no traceback, and leaves every existing file unchanged.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ann2snn.cli import UsageError
from ann2snn.logs import (
    ANN_ACCURACY_NAME, SUMMARY_NAME, LogError, check_figs_architecture, find_runs,
    read_ann_accuracy, read_run_logs, record_ann_accuracy)
from ann2snn.plotting import figure_file_name, main
from test_errors import assert_usage_error  # pytest puts tests/ on sys.path
from test_figures import write_run as write_figure_run

REPO = Path(__file__).resolve().parents[1]
MLP_MODEL_DIR = REPO / "pretrained" / "MLP" / "k0"
FIGURES = ("accuracy_speed", "sops", "sparsity")


def run_script(script, *args):
    """Run REPO/<script> with `args` from its architecture folder and return the process."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    return subprocess.run(command, cwd=REPO / Path(script).parts[0], capture_output=True,
                          text=True, timeout=300)


def spiking_mlp(figs_dir, data_dir, k=0):
    """Run Spiking_MLP_FashionMNIST.py on 20 images for 5 time steps, writing into figs_dir."""
    return run_script("MLP/Spiking_MLP_FashionMNIST.py", "--k", k, "--time_steps", 5,
                      "--num_images", 20, "--model_dir", MLP_MODEL_DIR, "--data_dir", data_dir,
                      "--figs_dir", figs_dir)


def file_contents(folder):
    """Return {relative path: bytes} of every file below folder."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def run_logs(batch_sizes=(4, 3), time_steps=3):
    """Return consistent logs: every image correct and spiking from the first step on."""
    steps = np.arange(1, time_steps + 1)
    return {
        "accuracy": np.array([[size] * time_steps for size in batch_sizes]),
        "spike_num": np.array([2 * steps for _ in batch_sizes]),
        "spike_collect": np.array([2 * steps for _ in batch_sizes]),
        "sop_num": np.array([10 * steps for _ in batch_sizes]),
    }


def write_run(figs_dir, k, architecture, logs=None, summary_changes=None):
    """Write a run of 7 images (batches of 4 and 3) for 3 time steps into figs_dir/k<k>.

    `summary_changes` replaces summary values after writing, so they may be invalid.
    """
    run_dir = write_figure_run(figs_dir, k, architecture, time_steps=3,
                               logs=run_logs() if logs is None else logs, numpy_ann_accuracy=0.8)
    if summary_changes:
        summary_path = run_dir / SUMMARY_NAME
        stored = json.loads(summary_path.read_text())
        stored.update(summary_changes)
        summary_path.write_text(json.dumps(stored))
    return run_dir


@pytest.fixture
def figs_dir(tmp_path):
    path = tmp_path / "figs"
    path.mkdir()
    return path


# --- Figs folder of another architecture ------------------------------------------------------


def test_spiking_rejects_other_architecture_run(figs_dir, fashion_mnist_dir):
    write_run(figs_dir, 0, "LeNet")
    before = file_contents(figs_dir)

    result = spiking_mlp(figs_dir, fashion_mnist_dir)

    assert_usage_error(result, f"--figs_dir {figs_dir} contains LeNet results",
                       str(figs_dir / "k0" / SUMMARY_NAME), "this script writes MLP results",
                       "Pass --figs_dir with a folder for MLP results")
    assert file_contents(figs_dir) == before
    assert sorted(path.name for path in figs_dir.iterdir()) == ["k0"]


def test_spiking_rejects_other_architecture_other_k(figs_dir, fashion_mnist_dir):
    # The figure scripts of both networks would skip the other's run in such a mixed folder.
    write_run(figs_dir, 1, "LeNet")
    before = file_contents(figs_dir)

    result = spiking_mlp(figs_dir, fashion_mnist_dir, k=0)

    assert_usage_error(result, "contains LeNet results", str(figs_dir / "k1" / SUMMARY_NAME))
    assert file_contents(figs_dir) == before


def test_spiking_rejects_other_architecture_entry(figs_dir, fashion_mnist_dir):
    record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.9, "architecture": "LeNet"})
    before = file_contents(figs_dir)

    result = spiking_mlp(figs_dir, fashion_mnist_dir)

    assert_usage_error(result, "contains LeNet results", f"{ANN_ACCURACY_NAME} entry 'k0'")
    assert file_contents(figs_dir) == before


def test_spiking_accepts_same_architecture(figs_dir, fashion_mnist_dir):
    write_run(figs_dir, 1, "MLP")
    record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.9, "architecture": "MLP"})

    result = spiking_mlp(figs_dir, fashion_mnist_dir)

    assert result.returncode == 0, result.stderr
    assert read_run_logs(figs_dir / "k0").num_images == 20
    assert read_run_logs(figs_dir / "k1").num_images == 7


def test_check_skips_unreadable_summaries(figs_dir):
    (figs_dir / "k0").mkdir()
    (figs_dir / "k0" / SUMMARY_NAME).write_text("{not json")
    (figs_dir / "k1").mkdir()
    (figs_dir / "k1" / SUMMARY_NAME).write_text(json.dumps({"architecture": ["LeNet"]}))
    (figs_dir / ANN_ACCURACY_NAME).write_text(json.dumps({"k0": {"architecture": "ResNet"}}))

    check_figs_architecture(figs_dir, "MLP")


def test_check_of_missing_folder_passes(tmp_path):
    check_figs_architecture(tmp_path / "missing", "MLP", k=0)


def test_check_finds_named_run_without_listing(figs_dir, monkeypatch):
    write_run(figs_dir, 2, "LeNet")

    def deny_listing(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "iterdir", deny_listing)
    check_figs_architecture(figs_dir, "MLP", k=0)
    with pytest.raises(UsageError, match="contains LeNet results"):
        check_figs_architecture(figs_dir, "MLP", k=2)


def test_record_rejects_other_architecture(figs_dir):
    write_run(figs_dir, 0, "LeNet")
    record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.9})
    before = file_contents(figs_dir)

    with pytest.raises(UsageError, match=r"contains LeNet results .*k0/summary\.json"):
        record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.5, "architecture": "MLP"})

    assert file_contents(figs_dir) == before


def test_record_stores_architecture(figs_dir):
    write_run(figs_dir, 0, "MLP")

    record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.5, "architecture": "MLP"})

    assert read_ann_accuracy(figs_dir)["k0"] == {"accuracy": 0.5, "architecture": "MLP"}


@pytest.mark.parametrize("architecture", ["ResNet", ["MLP"], 3])
def test_record_rejects_unknown_architecture(figs_dir, architecture):
    with pytest.raises(ValueError, match=r"info\['architecture'\] must be one of"):
        record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.5, "architecture": architecture})

    assert not (figs_dir / ANN_ACCURACY_NAME).exists()


def test_figure_skips_entry_of_other_architecture(figs_dir, caplog):
    write_run(figs_dir, 0, "MLP", summary_changes={"numpy_ann_accuracy": None, "ann_accuracy": None})
    (figs_dir / ANN_ACCURACY_NAME).write_text(json.dumps({
        "k0": {"accuracy": 0.9, "architecture": "LeNet"},
        "fp32": {"accuracy": 0.9, "architecture": "LeNet"},
    }))

    assert main("accuracy_speed", "MLP", figs_dir, argv=[]) == 0

    warnings = [record.getMessage() for record in caplog.records]
    assert any("entry 'k0' is for architecture 'LeNet', expected 'MLP'" in text for text in warnings)
    assert any("entry 'fp32' is for architecture 'LeNet', expected 'MLP'" in text for text in warnings)


# --- Summary fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, fragment", [
    pytest.param("architecture", ["MLP"], "architecture is ['MLP']", id="architecture-list"),
    pytest.param("architecture", {"name": "MLP"}, "architecture is {'name': 'MLP'}",
                 id="architecture-dict"),
    pytest.param("numpy_ann_accuracy", "abc",
                 "numpy_ann_accuracy must be a fraction in [0, 1] or null, got 'abc'",
                 id="numpy-accuracy-text"),
    pytest.param("numpy_ann_accuracy", [1],
                 "numpy_ann_accuracy must be a fraction in [0, 1] or null, got [1]",
                 id="numpy-accuracy-list"),
    pytest.param("numpy_ann_accuracy", 5,
                 "numpy_ann_accuracy must be a fraction in [0, 1] or null, got 5",
                 id="numpy-accuracy-above-1"),
    pytest.param("numpy_ann_accuracy", -0.5,
                 "numpy_ann_accuracy must be a fraction in [0, 1] or null, got -0.5",
                 id="numpy-accuracy-negative"),
    pytest.param("ann_accuracy", 10 ** 400,
                 "ann_accuracy must be a fraction in [0, 1] or null, got 1000",
                 id="accuracy-beyond-float"),
    pytest.param("neuron_count", 10 ** 400, "neuron_count must be a positive integer up to",
                 id="neuron-count-beyond-float"),
    pytest.param("ann_operation_count", 2 ** 63,
                 f"ann_operation_count must be a positive integer up to {2 ** 63 - 1}",
                 id="operation-count-beyond-int64"),
    pytest.param("k", [0], "k must be a non-negative integer", id="k-list"),
])
def test_invalid_summary_field_skips_run(figs_dir, caplog, field, value, fragment):
    write_run(figs_dir, 0, "MLP", summary_changes={field: value})
    summary_path = figs_dir / "k0" / SUMMARY_NAME

    with pytest.raises(LogError) as error:
        read_run_logs(figs_dir / "k0")
    assert str(error.value).startswith(f"{summary_path}: ")
    assert fragment in str(error.value)

    for figure in FIGURES:
        caplog.clear()
        assert main(figure, "MLP", figs_dir, argv=[]) == 1
        errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
        assert any(str(summary_path) in text and fragment in text for text in errors), errors
        assert not (figs_dir / figure_file_name(figure, "MLP")).exists()


def test_invalid_architecture_in_script(figs_dir):
    write_run(figs_dir, 0, "MLP", summary_changes={"architecture": ["MLP"]})
    before = file_contents(figs_dir)

    result = run_script("MLP/figs/sparsity.py", "--figs_dir", figs_dir)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "architecture is ['MLP']" in result.stderr
    assert file_contents(figs_dir) == before


def test_log_sums_beyond_int64_skip_run(figs_dir, caplog):
    logs = run_logs()
    logs["sop_num"] = np.full((2, 3), 2 ** 62, dtype=np.int64)  # 2 batches add up to 2^63
    write_run(figs_dir, 0, "MLP", logs=logs)

    with pytest.raises(LogError, match=r"sop_num\.txt: the values of time step 1 add up to "
                                       f"{2 ** 63} over the 2 batches"):
        read_run_logs(figs_dir / "k0")
    assert main("sops", "MLP", figs_dir, argv=[]) == 1
    assert not (figs_dir / figure_file_name("sops", "MLP")).exists()


def test_log_sums_within_int64_are_read(figs_dir):
    logs = run_logs()
    logs["sop_num"] = np.full((2, 3), 2 ** 61, dtype=np.int64)
    write_run(figs_dir, 0, "MLP", logs=logs)

    assert read_run_logs(figs_dir / "k0").sop_num.sum(axis=0).tolist() == [2 ** 62] * 3


# --- Output path and figs folder permissions ------------------------------------------------------


def test_output_folder_rejected(figs_dir, tmp_path, capsys):
    write_run(figs_dir, 0, "MLP")
    output = tmp_path / "dir.png"
    output.mkdir()
    (output / "kept.txt").write_text("kept\n")

    with pytest.raises(SystemExit) as exit_info:
        main("sops", "MLP", figs_dir, argv=["--output", str(output)])

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"the output path {output} is a folder, not a PNG file" in error
    assert "pass --output with the path of a PNG file" in error
    assert sorted(path.name for path in output.iterdir()) == ["kept.txt"]


def test_default_output_folder_rejected(figs_dir, capsys):
    write_run(figs_dir, 0, "MLP")
    output = figs_dir / figure_file_name("sparsity", "MLP")
    output.mkdir()

    with pytest.raises(SystemExit) as exit_info:
        main("sparsity", "MLP", figs_dir, argv=[])

    assert exit_info.value.code == 2
    assert f"the output path {output} is a folder" in capsys.readouterr().err
    assert output.is_dir()


def test_output_folder_rejected_by_script(figs_dir):
    write_run(figs_dir, 0, "MLP")
    output = figs_dir / "dir.png"
    output.mkdir()

    result = run_script("MLP/figs/sops.py", "--figs_dir", figs_dir, "--output", output)

    assert_usage_error(result, f"the output path {output} is a folder")
    assert output.is_dir()


def test_unlistable_figs_dir_is_logged(figs_dir, monkeypatch):
    def deny_listing(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "iterdir", deny_listing)
    with pytest.raises(LogError, match=f"{figs_dir}: the folder cannot be listed"):
        find_runs(figs_dir)


def unlistable_command(command):
    """Return `command` so that it cannot list a folder of mode 333, wrapped in setpriv for root.

    Skips the test when root has no setpriv, because root can list every folder.
    """
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not found, so root would list a folder of mode 333")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]


def test_unlistable_figs_dir_in_script(figs_dir):
    write_run(figs_dir, 0, "MLP")
    command = unlistable_command(
        [sys.executable, str(REPO / "MLP" / "figs" / "sops.py"), "--figs_dir", str(figs_dir)])
    figs_dir.chmod(0o333)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        figs_dir.chmod(0o755)

    if "Operation not permitted" in result.stderr and "setpriv" in result.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{figs_dir}: the folder cannot be listed (Permission denied)" in result.stderr
    assert not (figs_dir / figure_file_name("sops", "MLP")).exists()
