"""Tests of ann2snn.logs: the run log files, summary.json and ann_accuracy.json."""

import json
import os
import stat

import numpy as np
import pytest

from ann2snn import logs
from ann2snn.architectures import get_architecture
from ann2snn.logs import (
    LOG_NAMES, LogError, check_run_logs, copy_ann_accuracy, find_runs, read_ann_accuracy, read_log,
    read_run_logs, record_ann_accuracy, write_json_atomically, write_run_logs, write_text_atomically)


def make_run(k=1, architecture="LeNet", batch_sizes=(4, 3), time_steps=5):
    """Return consistent (logs, summary) of a small run with 2 batches x 5 steps by default."""
    num_batches = len(batch_sizes)
    steps = np.arange(1, time_steps + 1)
    accuracy = np.array([[min(size, step) for step in steps] for size in batch_sizes])
    positive = np.array([[10 * (batch + 1) * step for step in steps] for batch in range(num_batches)])
    negative = np.array([[step // 2 for step in steps] for _ in range(num_batches)])
    sop_num = 100 * positive + 50 * negative
    run_logs = {
        "accuracy": accuracy,
        "spike_num": positive + negative,
        "spike_collect": positive - negative,
        "sop_num": sop_num,
    }
    summary = {
        "architecture": architecture,
        "k": k,
        "time_steps": time_steps,
        "batch_size": max(batch_sizes),
        "num_images": sum(batch_sizes),
        "num_batches": num_batches,
        "batch_sizes": list(batch_sizes),
        "ann_accuracy": 0.8,
    }
    return run_logs, summary


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


# --- write_run_logs and read_run_logs ---------------------------------------------------


def test_round_trip_keeps_arrays_and_summary(tmp_path):
    run_logs, summary = make_run()
    summary["simulator_seed"] = 123
    write_run_logs(tmp_path / "k1", run_logs, summary)

    run = read_run_logs(tmp_path / "k1")

    assert run.path == tmp_path / "k1"
    for name in LOG_NAMES:
        array = getattr(run, name)
        assert array.dtype == np.int64
        assert array.shape == (2, 5)
        np.testing.assert_array_equal(array, run_logs[name])
    assert run.summary["simulator_seed"] == 123
    assert run.k == 1
    assert run.architecture == "LeNet"
    assert run.batch_sizes == [4, 3]


def test_log_lines_are_batch_major(tmp_path):
    run_logs, summary = make_run()
    write_run_logs(tmp_path / "k1", run_logs, summary)

    # accuracy is min(batch size, step): batch 0 of 4 images, then batch 1 of 3 images.
    assert read_lines(tmp_path / "k1" / "accuracy.txt") == ["1", "2", "3", "4", "4", "1", "2", "3", "3", "3"]
    for name in LOG_NAMES:
        assert len(read_lines(tmp_path / "k1" / f"{name}.txt")) == 10
    assert sorted(os.listdir(tmp_path / "k1")) == sorted([f"{name}.txt" for name in LOG_NAMES] + ["summary.json"])


def test_summary_gets_derived_keys(tmp_path):
    run_logs, summary = make_run()
    del summary["ann_accuracy"]
    write_run_logs(tmp_path / "k1", run_logs, summary)

    written = json.loads((tmp_path / "k1" / "summary.json").read_text())
    lenet = get_architecture("LeNet")
    assert written["neuron_count"] == lenet.neuron_count()
    assert written["ann_operation_count"] == lenet.ann_operation_count()
    assert written["ann_accuracy"] is None
    # Final step: batch 0 has 4 of 4 correct, batch 1 has 3 of 3.
    assert written["snn_accuracy"] == 1.0


def test_summary_keeps_given_counts(tmp_path):
    run_logs, summary = make_run()
    summary.update(neuron_count=11, ann_operation_count=22, snn_accuracy=1.0)
    write_run_logs(tmp_path / "k1", run_logs, summary)

    written = json.loads((tmp_path / "k1" / "summary.json").read_text())
    assert written["neuron_count"] == 11
    assert written["ann_operation_count"] == 22


def test_numpy_values_are_accepted(tmp_path):
    run_logs, summary = make_run()
    summary["num_images"] = np.int64(summary["num_images"])
    summary["batch_sizes"] = np.array(summary["batch_sizes"]).tolist()
    run_logs["sop_num"] = run_logs["sop_num"].astype(np.float64)
    write_run_logs(tmp_path / "k1", run_logs, summary)

    run = read_run_logs(tmp_path / "k1")
    assert run.num_images == 7
    np.testing.assert_array_equal(run.sop_num, make_run()[0]["sop_num"])


def test_rewrite_replaces_whole_run(tmp_path):
    run_logs, summary = make_run(time_steps=5)
    write_run_logs(tmp_path / "k1", run_logs, summary)
    (tmp_path / "k1" / "stale.txt").write_text("from an older run")

    run_logs, summary = make_run(time_steps=3)
    write_run_logs(tmp_path / "k1", run_logs, summary)

    assert not (tmp_path / "k1" / "stale.txt").exists()
    assert read_run_logs(tmp_path / "k1").accuracy.shape == (2, 3)
    assert os.listdir(tmp_path) == ["k1"]


def test_run_files_are_readable_by_others(tmp_path):
    old_umask = os.umask(0o022)
    try:
        run_logs, summary = make_run()
        write_run_logs(tmp_path / "k1", run_logs, summary)
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE((tmp_path / "k1").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "k1" / "accuracy.txt").stat().st_mode) == 0o644


def test_failed_write_keeps_previous_logs(tmp_path, monkeypatch):
    old_logs, old_summary = make_run(time_steps=5)
    write_run_logs(tmp_path / "k1", old_logs, old_summary)
    before = {name: (tmp_path / "k1" / name).read_bytes() for name in os.listdir(tmp_path / "k1")}

    real_write = logs.write_text_atomically
    calls = []

    def write_then_fail(path, text):
        if calls:
            raise OSError("disk full (simulated)")
        calls.append(path)
        real_write(path, text)

    monkeypatch.setattr(logs, "write_text_atomically", write_then_fail)
    new_logs, new_summary = make_run(time_steps=3)
    with pytest.raises(OSError, match="simulated"):
        write_run_logs(tmp_path / "k1", new_logs, new_summary)

    assert len(calls) == 1
    after = {name: (tmp_path / "k1" / name).read_bytes() for name in os.listdir(tmp_path / "k1")}
    assert after == before
    assert os.listdir(tmp_path) == ["k1"]


def test_failed_first_write_leaves_no_run(tmp_path, monkeypatch):
    def fail(path, text):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(logs, "write_text_atomically", fail)
    run_logs, summary = make_run()
    with pytest.raises(OSError):
        write_run_logs(tmp_path / "k1", run_logs, summary)

    assert os.listdir(tmp_path) == []


def test_failed_rename_restores_previous_logs(tmp_path, monkeypatch):
    old_logs, old_summary = make_run(time_steps=5)
    write_run_logs(tmp_path / "k1", old_logs, old_summary)

    real_rename = os.rename

    def rename_new_run_fails(source, target):
        if ".tmp-" in os.path.basename(source):
            raise OSError("rename failed (simulated)")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename_new_run_fails)
    new_logs, new_summary = make_run(time_steps=3)
    with pytest.raises(OSError, match="simulated"):
        write_run_logs(tmp_path / "k1", new_logs, new_summary)
    monkeypatch.undo()

    assert read_run_logs(tmp_path / "k1").accuracy.shape == (2, 5)
    assert os.listdir(tmp_path) == ["k1"]


@pytest.mark.parametrize("name", LOG_NAMES)
def test_write_rejects_wrong_shape(tmp_path, name):
    run_logs, summary = make_run()
    run_logs[name] = run_logs[name][:, :4]

    with pytest.raises(ValueError, match=rf"log '{name}' has shape \(2, 4\), expected \(2, 5\)"):
        write_run_logs(tmp_path / "k1", run_logs, summary)
    assert os.listdir(tmp_path) == []


def test_write_rejects_flat_array(tmp_path):
    run_logs, summary = make_run()
    run_logs["accuracy"] = run_logs["accuracy"].reshape(-1)

    with pytest.raises(ValueError, match="has shape"):
        write_run_logs(tmp_path / "k1", run_logs, summary)


def test_write_rejects_fractional_values(tmp_path):
    run_logs, summary = make_run()
    run_logs["sop_num"] = run_logs["sop_num"] + 0.5

    with pytest.raises(ValueError, match="not whole numbers"):
        write_run_logs(tmp_path / "k1", run_logs, summary)


def test_write_rejects_missing_and_unknown_logs(tmp_path):
    run_logs, summary = make_run()
    run_logs["spikes"] = run_logs.pop("spike_num")

    with pytest.raises(ValueError, match=r"missing: \['spike_num'\], unknown: \['spikes'\]"):
        write_run_logs(tmp_path / "k1", run_logs, summary)


def test_write_rejects_wrong_folder_name(tmp_path):
    run_logs, summary = make_run(k=2)

    with pytest.raises(ValueError, match="its name must be 'k2'"):
        write_run_logs(tmp_path / "k1", run_logs, summary)


@pytest.mark.parametrize("change, message", [
    ({"num_images": 8}, "add up to 7, expected num_images = 8"),
    ({"num_batches": 3}, "batch_sizes has 2 entries, expected num_batches = 3"),
    ({"batch_sizes": [3, 4]}, "every batch but the last"),
    ({"time_steps": 0}, "time_steps must be a positive integer"),
    ({"k": -1}, "k must be a non-negative integer"),
    ({"k": True}, "k must be a non-negative integer"),
    ({"architecture": "VGG"}, "architecture is 'VGG'"),
    ({"ann_accuracy": 80.0}, r"ann_accuracy must be a fraction in \[0, 1\]"),
    ({"snn_accuracy": 0.5}, "snn_accuracy is 0.5, but the accuracy log gives 1.0"),
])
def test_write_rejects_invalid_summary(tmp_path, change, message):
    run_logs, summary = make_run()
    summary.update(change)

    with pytest.raises(ValueError, match=message):
        write_run_logs(tmp_path / "k1", run_logs, summary)
    assert os.listdir(tmp_path) == []


def test_write_rejects_missing_summary_key(tmp_path):
    run_logs, summary = make_run()
    del summary["batch_sizes"]

    with pytest.raises(ValueError, match="missing summary keys: batch_sizes"):
        write_run_logs(tmp_path / "k1", run_logs, summary)


# --- Reading invalid files ----------------------------------------------------------


def write_valid_run(tmp_path, k=1, **options):
    run_logs, summary = make_run(k=k, **options)
    run_dir = tmp_path / f"k{k}"
    write_run_logs(run_dir, run_logs, summary)
    return run_dir


def test_read_reports_line_count(tmp_path):
    run_dir = write_valid_run(tmp_path)
    path = run_dir / "sop_num.txt"
    path.write_text("".join(f"{line}\n" for line in read_lines(path)[:7]))

    with pytest.raises(LogError) as error:
        read_run_logs(run_dir)
    assert str(error.value) == f"{path}: 7 lines, expected 10 (2 batches x 5 time steps)"


def test_read_reports_non_integer_line(tmp_path):
    run_dir = write_valid_run(tmp_path)
    path = run_dir / "spike_num.txt"
    lines = read_lines(path)
    lines[3] = "12.5"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(LogError) as error:
        read_run_logs(run_dir)
    assert str(error.value) == f"{path}: line 4 is '12.5', expected an integer"


@pytest.mark.parametrize("bad_line", ["", "1_000", "nan", "0x10", "--3"])
def test_read_log_rejects_bad_line(tmp_path, bad_line):
    path = tmp_path / "accuracy.txt"
    path.write_text(f"1\n{bad_line}\n")

    with pytest.raises(LogError, match="line 2 is"):
        read_log(path, 1, 2)


def test_read_log_accepts_signs_and_spaces(tmp_path):
    path = tmp_path / "spike_collect.txt"
    path.write_text("-3\n +4 \n0\n5")

    np.testing.assert_array_equal(read_log(path, 2, 2), [[-3, 4], [0, 5]])


def test_read_log_rejects_overflow(tmp_path):
    path = tmp_path / "sop_num.txt"
    path.write_text(f"{2**64}\n")

    with pytest.raises(LogError, match="64-bit"):
        read_log(path, 1, 1)


def test_read_reports_missing_log(tmp_path):
    run_dir = write_valid_run(tmp_path)
    (run_dir / "spike_collect.txt").unlink()

    with pytest.raises(LogError, match=r"spike_collect\.txt: file not found"):
        read_run_logs(run_dir)


def test_read_reports_missing_summary(tmp_path):
    run_dir = write_valid_run(tmp_path)
    (run_dir / "summary.json").unlink()

    with pytest.raises(LogError, match=r"summary\.json: file not found"):
        read_run_logs(run_dir)


def test_read_reports_invalid_summary_json(tmp_path):
    run_dir = write_valid_run(tmp_path)
    (run_dir / "summary.json").write_text('{"k": 1,')

    with pytest.raises(LogError, match=r"summary\.json: invalid JSON at line 1"):
        read_run_logs(run_dir)


def test_read_reports_inconsistent_summary(tmp_path):
    run_dir = write_valid_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["num_batches"] = 3
    (run_dir / "summary.json").write_text(json.dumps(summary))

    with pytest.raises(LogError, match="batch_sizes has 2 entries, expected num_batches = 3"):
        read_run_logs(run_dir)


def test_read_reports_k_not_matching_folder(tmp_path):
    run_dir = write_valid_run(tmp_path, k=1)
    run_dir.rename(tmp_path / "k2")

    with pytest.raises(LogError, match="k is 1, but the folder is named 'k2'"):
        read_run_logs(tmp_path / "k2")


# --- check_run_logs ------------------------------------------------------------------


def test_check_accepts_consistent_run(tmp_path):
    run = read_run_logs(write_valid_run(tmp_path))

    assert check_run_logs(run) == []


def test_check_reports_broken_definitions(tmp_path):
    run = read_run_logs(write_valid_run(tmp_path))
    run.accuracy[1, 0] = 4  # batch 1 has only 3 images
    run.sop_num[0, 3] = 0  # a cumulative count that decreases
    run.spike_collect[0, 0] = run.spike_num[0, 0] + 2
    run.spike_collect[1, 1] += 1  # odd sum with spike_num

    problems = check_run_logs(run)

    assert any(problem.startswith("accuracy.txt") for problem in problems)
    assert any(problem.startswith("sop_num.txt: a cumulative count decreases") for problem in problems)
    assert any(problem.startswith("spike_collect.txt: |net spikes| exceeds") for problem in problems)
    assert any("odd sum" in problem for problem in problems)


# --- find_runs -------------------------------------------------------------------------


def test_find_runs_sorts_by_integer_k(tmp_path):
    for k in (10, 2, 0):
        write_valid_run(tmp_path, k=k)

    runs = find_runs(tmp_path)

    assert list(runs) == [0, 2, 10]
    assert runs[10] == tmp_path / "k10"


def test_find_runs_ignores_other_entries(tmp_path):
    write_valid_run(tmp_path, k=1)
    for name in ("k1.tmp-123-abc", "k1.old-123-abc", "kx", "k", "k2_backup", "old_k3"):
        (tmp_path / name).mkdir()
    (tmp_path / "k4").write_text("a file, not a folder")
    (tmp_path / "ann_accuracy.json").write_text("{}")

    assert find_runs(tmp_path) == {1: tmp_path / "k1"}


def test_find_runs_of_missing_folder_is_empty(tmp_path):
    assert find_runs(tmp_path / "missing") == {}


def test_find_runs_rejects_duplicate_k(tmp_path):
    (tmp_path / "k1").mkdir()
    (tmp_path / "k01").mkdir()

    with pytest.raises(LogError, match="both contain k = 1"):
        find_runs(tmp_path)


# --- ann_accuracy.json and atomic writes ---------------------------------------------


def test_ann_accuracy_absent_is_empty(tmp_path):
    assert read_ann_accuracy(tmp_path) == {}


def test_record_ann_accuracy_merges_entries(tmp_path):
    record_ann_accuracy(tmp_path, "fp32", {"accuracy": 0.9001, "epochs": 10})
    record_ann_accuracy(tmp_path, "k1", {"accuracy": 0.89})
    record_ann_accuracy(tmp_path, "k1", {"accuracy": 0.895, "note": "retrained"})

    assert read_ann_accuracy(tmp_path) == {
        "fp32": {"accuracy": 0.9001, "epochs": 10},
        "k1": {"accuracy": 0.895, "note": "retrained"},
    }
    assert os.listdir(tmp_path) == ["ann_accuracy.json"]


def test_record_ann_accuracy_creates_folder(tmp_path):
    record_ann_accuracy(tmp_path / "figs", "k0", {"accuracy": np.float32(0.5)})

    assert read_ann_accuracy(tmp_path / "figs") == {"k0": {"accuracy": 0.5}}


@pytest.mark.parametrize("key, info", [
    ("", {"accuracy": 0.5}),
    ("k1", {"accuracy": 89.0}),
    ("k1", {"loss": 0.3}),
    ("k1", 0.89),
])
def test_record_ann_accuracy_rejects_invalid_input(tmp_path, key, info):
    with pytest.raises(ValueError):
        record_ann_accuracy(tmp_path, key, info)
    assert not (tmp_path / "ann_accuracy.json").exists()


def test_copy_ann_accuracy_rebases_paths(tmp_path):
    model = tmp_path / "pretrained" / "k1" / "model_fashion_mnist.npz"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"model")
    source, target = tmp_path / "MLP" / "figs", tmp_path / "demo" / "quick" / "MLP" / "figs"
    record_ann_accuracy(source, "k1", {"accuracy": 0.9, "model": "../../pretrained/k1/model_fashion_mnist.npz"})
    record_ann_accuracy(source, "k0", {"accuracy": 0.8, "model": str(model)})
    record_ann_accuracy(source, "k2", {"accuracy": 0.7})

    copy_ann_accuracy(source, target)
    copied = read_ann_accuracy(target)

    assert (target / copied["k1"]["model"]).resolve() == model.resolve()
    assert copied["k0"]["model"] == str(model)
    assert copied["k2"] == {"accuracy": 0.7}
    assert copied["k1"]["accuracy"] == 0.9


def test_record_ann_accuracy_keeps_invalid_file(tmp_path):
    path = tmp_path / "ann_accuracy.json"
    path.write_text("[1, 2]")

    with pytest.raises(LogError, match="expected a JSON object"):
        record_ann_accuracy(tmp_path, "k1", {"accuracy": 0.5})
    assert path.read_text() == "[1, 2]"


def test_write_text_atomically_replaces_content(tmp_path):
    path = tmp_path / "notes.txt"
    write_text_atomically(path, "old\n")
    write_text_atomically(path, "new\n")

    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_write_text_atomically_keeps_old_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "notes.txt"
    write_text_atomically(path, "old\n")

    def fail_replace(source, target):
        raise OSError("replace failed (simulated)")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="simulated"):
        write_text_atomically(path, "new\n")
    monkeypatch.undo()

    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_write_json_atomically_converts_numpy(tmp_path):
    path = tmp_path / "data.json"
    write_json_atomically(path, {"count": np.int64(3), "values": np.arange(2)})

    assert json.loads(path.read_text()) == {"count": 3, "values": [0, 1]}


def test_write_json_atomically_rejects_unknown_type(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomically(tmp_path / "data.json", {"value": object()})
    assert os.listdir(tmp_path) == []
