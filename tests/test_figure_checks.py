"""Tests of how the figure scripts treat runs that are invalid, unverified or partial.

They cover ann2snn.logs.check_run_logs on edited log files and the runs that
ann2snn.plotting.load_runs skips, after which main() writes no figure and exits
with 1. They also cover the labels and log lines of runs that failed --verify or cover part
of the test set, and of a figs folder without the full-precision accuracy.
"""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from ann2snn.data import TEST_SIZE
from ann2snn.logs import check_run_logs, find_runs, read_run_logs, record_ann_accuracy, write_run_logs
from ann2snn.plotting import (
    figure_file_name, load_runs, main, plot_accuracy_speed, plot_sops)
from test_figures import draw_figures, generated_logs  # pytest puts tests/ on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("accuracy_speed", "sops", "sparsity")
INT64_MIN = np.iinfo(np.int64).min
COMMITTED_FIGURES = [
    (architecture, figure) for architecture in ("LeNet", "MLP") for figure in FIGURES]


def write_run(figs_dir, k, architecture="LeNet", batch_sizes=None, time_steps=5,
              **summary_changes):
    """Write run k into figs_dir/k<k>, by default over all TEST_SIZE test images in batches of 50."""
    batch_sizes = [50] * (TEST_SIZE // 50) if batch_sizes is None else list(batch_sizes)
    summary = {
        "architecture": architecture,
        "k": k,
        "time_steps": time_steps,
        "batch_size": max(batch_sizes),
        "num_images": sum(batch_sizes),
        "num_batches": len(batch_sizes),
        "batch_sizes": batch_sizes,
        "neuron_count": 50,
        "ann_operation_count": 1000,
        "ann_accuracy": 0.8,
    }
    summary.update(summary_changes)
    run_dir = Path(figs_dir) / f"k{k}"
    write_run_logs(run_dir, generated_logs(time_steps, batch_sizes), summary)
    return run_dir


def set_log_line(run_dir, name, line_number, text):
    """Replace the 1-based line `line_number` of log `name` in run_dir by `text`."""
    path = run_dir / f"{name}.txt"
    lines = path.read_text().splitlines()
    lines[line_number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def messages(caplog, level):
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def legend_texts(figure):
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


@pytest.fixture
def figs_dir(tmp_path):
    path = tmp_path / "figs"
    path.mkdir()
    return path


# --- check_run_logs on edited log files ----------------------------------------------------


def test_check_catches_accuracy_above_batch_size(figs_dir):
    run_dir = write_run(figs_dir, 0)
    set_log_line(run_dir, "accuracy", 7, "999999")  # batch 2, time step 2

    problems = check_run_logs(read_run_logs(run_dir))

    assert problems == [
        "accuracy.txt: a value is negative or larger than its batch size, first at line 7 "
        "(batch 2, time step 2): 999999 in a batch of 50 images (1 line in total)"]


def test_check_catches_negative_sop_count(figs_dir):
    run_dir = write_run(figs_dir, 1)
    set_log_line(run_dir, "sop_num", 4, "-99999999")  # batch 1, time step 4

    problems = check_run_logs(read_run_logs(run_dir))

    assert problems == [
        "sop_num.txt: a value is negative, first at line 4 (batch 1, time step 4): "
        "-99999999 (1 line in total)",
        "sop_num.txt: a cumulative count decreases between time steps, first at line 4 "
        "(batch 1, time step 4): -99999999 after 360 (1 line in total)",
    ]


def test_check_counts_every_broken_line(figs_dir):
    run_dir = write_run(figs_dir, 1)
    for line_number in (3, 8, 9):
        set_log_line(run_dir, "accuracy", line_number, "-1")

    problems = check_run_logs(read_run_logs(run_dir))

    assert len(problems) == 1
    assert "first at line 3 (batch 1, time step 3): -1 in a batch of 50 images" in problems[0]
    assert problems[0].endswith("(3 lines in total)")


def test_check_catches_most_negative_net_spikes(figs_dir):
    # np.abs(INT64_MIN) overflows to INT64_MIN, so a check through abs() misses this
    # line. Its sum with the even spike_num is even, so the parity check passes it.
    run_dir = write_run(figs_dir, 1)
    set_log_line(run_dir, "spike_collect", 4, str(INT64_MIN))
    run = read_run_logs(run_dir)
    assert run.spike_num[0, 3] % 2 == 0

    problems = check_run_logs(run)

    assert problems == [
        "spike_collect.txt: |net spikes| exceeds the spike count of spike_num.txt, first at "
        f"line 4 (batch 1, time step 4): net spikes {INT64_MIN}, spike_num 14 (1 line in total)"]


def test_check_catches_drop_to_most_negative(figs_dir):
    # INT64_MIN - 360 overflows to a positive difference, so a check through np.diff
    # would miss the decrease.
    run_dir = write_run(figs_dir, 1)
    set_log_line(run_dir, "sop_num", 4, str(INT64_MIN))

    problems = check_run_logs(read_run_logs(run_dir))

    assert problems == [
        f"sop_num.txt: a value is negative, first at line 4 (batch 1, time step 4): {INT64_MIN} "
        "(1 line in total)",
        "sop_num.txt: a cumulative count decreases between time steps, first at line 4 "
        f"(batch 1, time step 4): {INT64_MIN} after 360 (1 line in total)",
    ]


def test_check_reports_odd_pair_values(figs_dir):
    run_dir = write_run(figs_dir, 1)
    set_log_line(run_dir, "spike_collect", 10, "8")  # spike_num is 17 there

    problems = check_run_logs(read_run_logs(run_dir))

    assert problems == [
        "spike_num.txt and spike_collect.txt: a pair of values has odd sum, so the positive "
        "spike count is not a whole number, first at line 10 (batch 2, time step 5): "
        "17 and 8 (1 line in total)"]


# --- load_runs and main() with a run that breaks the log definitions --------------------------


@pytest.mark.parametrize("name, line_number, text, problem_start", [
    ("accuracy", 7, "999999", "accuracy.txt: a value is negative or larger than its batch size"),
    ("sop_num", 4, "-99999999", "sop_num.txt: a value is negative"),
])
def test_broken_definition_skips_run(figs_dir, caplog, name, line_number, text, problem_start):
    write_run(figs_dir, 0)
    bad_dir = write_run(figs_dir, 1)
    set_log_line(bad_dir, name, line_number, text)

    runs = load_runs(find_runs(figs_dir), "LeNet")

    assert list(runs) == [0]
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].startswith(f"skipping k=1: the logs in {bad_dir} break their definitions")
    assert f"\n  {problem_start}, first at line {line_number} " in errors[0]
    assert "Rerun Spiking_LeNet_FashionMNIST.py --k 1" in errors[0]
    assert messages(caplog, logging.WARNING) == []


def test_skip_error_quotes_recorded_command(figs_dir, caplog):
    command = "Spiking_MLP_FashionMNIST.py --k 1 --time_steps 5 --verify"
    write_run(figs_dir, 0, architecture="MLP")
    bad_dir = write_run(figs_dir, 1, architecture="MLP", command=command)
    set_log_line(bad_dir, "accuracy", 1, "-3")

    load_runs(find_runs(figs_dir), "MLP")

    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1
    assert f"Rerun the spiking simulation to write them again (recorded command: {command}):" in errors[0]


def test_broken_definition_in_accuracy_figure(figs_dir):
    write_run(figs_dir, 0)
    bad_dir = write_run(figs_dir, 1)
    set_log_line(bad_dir, "accuracy", 7, "999999")

    assert main("accuracy_speed", "LeNet", figs_dir, argv=[]) == 1

    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()
    plot_accuracy_speed(figure, runs, {}, "LeNet")
    assert [text for text in legend_texts(figure) if text.startswith("SNN")] == [
        "SNN k=0: 10.00% from step 5"]


# --- main(): exit code and message when a run is skipped ---------------------------------------


@pytest.mark.parametrize("figure", FIGURES)
def test_skipped_run_writes_nothing(figs_dir, caplog, capsys, figure):
    write_run(figs_dir, 0)
    write_run(figs_dir, 1)
    write_run(figs_dir, 2)
    (figs_dir / "k1" / "spike_num.txt").write_text("1\n")
    set_log_line(figs_dir / "k2", "sop_num", 4, "-99999999")
    output = figs_dir / figure_file_name(figure, "LeNet")
    output.write_bytes(b"the previous figure")

    assert main(figure, "LeNet", figs_dir, argv=[]) == 1

    assert output.read_bytes() == b"the previous figure"
    assert capsys.readouterr().out == ""
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 3
    assert errors[0].startswith("skipping k=1: ")
    assert errors[1].startswith("skipping k=2: ")
    assert errors[2] == (
        f"{output} not written: the runs k=1, k=2 were skipped (see the errors above). "
        f"Rerun their spiking simulations, or move their folders out of {figs_dir}, "
        "and run this script again")


def test_skipped_run_message_for_one_run(figs_dir, caplog):
    write_run(figs_dir, 0)
    write_run(figs_dir, 1, architecture="MLP")
    output = figs_dir / figure_file_name("sops", "LeNet")

    assert main("sops", "LeNet", figs_dir, argv=[]) == 1

    assert not output.exists()
    assert messages(caplog, logging.ERROR)[-1] == (
        f"{output} not written: the run k=1 was skipped (see the errors above). "
        f"Rerun its spiking simulation, or move its folder out of {figs_dir}, "
        "and run this script again")


def test_no_skipped_run_exits_0(figs_dir, caplog):
    write_run(figs_dir, 0)
    write_run(figs_dir, 1)

    assert main("sparsity", "LeNet", figs_dir, argv=[]) == 0

    assert messages(caplog, logging.ERROR) == []


# --- Runs that failed --verify -------------------------------------------------------------------


def test_failed_verify_warns_with_counts(figs_dir, caplog):
    write_run(figs_dir, 0, verify_mismatches={"conv1": 0, "conv2": 0, "fc1": 0})
    run_dir = write_run(figs_dir, 1, verify_mismatches={"conv1": 0, "conv2": 12, "fc1": 3})

    runs = load_runs(find_runs(figs_dir), "LeNet")

    assert list(runs) == [0, 1]
    assert messages(caplog, logging.WARNING) == [
        f"k=1: the run in {run_dir} failed --verify: the net spike counts of some neurons "
        "differ from the quantized ANN (mismatching neurons per layer, summed over the "
        "images: conv1 0, conv2 12, fc1 3). Its labels say \"failed --verify\""]


def test_failed_verify_marks_labels(figs_dir):
    write_run(figs_dir, 0, verify_mismatches={"fc1": 0, "fc2": 0})
    write_run(figs_dir, 1, verify_mismatches={"fc1": 5, "fc2": 0})
    runs = load_runs(find_runs(figs_dir), "LeNet")

    accuracy_figure, sops_figure, sparsity_figure = draw_figures(runs)

    assert legend_texts(accuracy_figure) == [
        "SNN k=0: 10.00% from step 5",
        "quantized ANN k=0: 80.00%",
        "SNN k=1: 10.00% from step 5 (failed --verify)",
        "quantized ANN k=1: 80.00%",
    ]
    assert legend_texts(sops_figure)[:2] == [
        "SNN k=0: 12 SOPs/image = 0.012x ANN",
        "SNN k=1: 12 SOPs/image = 0.012x ANN (failed --verify)",
    ]
    tick_labels = [label.get_text() for label in sparsity_figure.axes[0].get_xticklabels()]
    assert tick_labels == [
        "k=0\n0.007 spikes/neuron",
        "k=1\n0.007 spikes/neuron\n(failed --verify)",
    ]


@pytest.mark.parametrize("mismatches", [None, {}, {"fc1": 0, "fc2": 0}])
def test_passed_or_no_verify_is_unmarked(figs_dir, caplog, mismatches):
    write_run(figs_dir, 1, verify_mismatches=mismatches)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_accuracy_speed(figure, runs, {}, "LeNet")

    assert legend_texts(figure)[0] == "SNN k=1: 10.00% from step 5"
    assert messages(caplog, logging.WARNING) == []


@pytest.mark.parametrize("mismatches", [[3, 0], {"fc1": -2}, {"fc1": "many"}, {"fc1": True}])
def test_invalid_verify_mismatches_warns(figs_dir, caplog, mismatches):
    run_dir = write_run(figs_dir, 1, verify_mismatches=mismatches)

    runs = load_runs(find_runs(figs_dir), "LeNet")

    assert list(runs) == [1]
    assert messages(caplog, logging.WARNING) == [
        f"k=1: {run_dir / 'summary.json'}: verify_mismatches is {mismatches!r}, expected an "
        "object of non-negative mismatch counts per layer, so the figure does not show "
        "whether this run passed --verify"]
    figure = Figure()
    plot_accuracy_speed(figure, runs, {}, "LeNet")
    assert legend_texts(figure)[0] == "SNN k=1: 10.00% from step 5"


# --- Runs over part of the test set ------------------------------------------------------------


@pytest.mark.parametrize("batch_sizes, note", [
    ([10, 10], " (first 20 test images)"),
    ([1], " (first test image)"),
    ([2500, 2500], " (first 5,000 test images)"),
])
def test_partial_test_set_marks_labels(figs_dir, batch_sizes, note):
    write_run(figs_dir, 1, batch_sizes=batch_sizes)
    runs = load_runs(find_runs(figs_dir), "LeNet")

    accuracy_figure, sops_figure, sparsity_figure = draw_figures(runs)

    assert legend_texts(accuracy_figure)[0].endswith(note)
    assert legend_texts(sops_figure)[0].endswith(note)
    tick_label = sparsity_figure.axes[0].get_xticklabels()[0].get_text()
    assert tick_label.splitlines()[-1] == note.strip()


def test_full_test_set_is_unmarked(figs_dir):
    write_run(figs_dir, 1)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_accuracy_speed(figure, runs, {}, "LeNet")

    assert runs[1].num_images == TEST_SIZE
    assert legend_texts(figure)[0] == "SNN k=1: 10.00% from step 5"


def test_failed_verify_and_partial_share_brackets(figs_dir):
    write_run(figs_dir, 2, batch_sizes=[10, 10], verify_mismatches={"fc1": 1})
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_sops(figure, runs, {}, "LeNet")

    assert legend_texts(figure)[0] == (
        "SNN k=2: 60 SOPs/image = 0.060x ANN (failed --verify, first 20 test images)")


# --- The full-precision line ------------------------------------------------------------------


# No ann_accuracy.json at all (MLP), or one without the "fp32" entry (LeNet).
@pytest.mark.parametrize("recorded, architecture", [(None, "MLP"), ("k1", "LeNet")])
def test_missing_fp32_accuracy_logs_info(figs_dir, caplog, recorded, architecture):
    caplog.set_level(logging.INFO, logger="ann2snn")
    write_run(figs_dir, 1, architecture=architecture)
    if recorded is not None:
        record_ann_accuracy(figs_dir, recorded, {"accuracy": 0.8})

    assert main("accuracy_speed", architecture, figs_dir, argv=[]) == 0

    path = figs_dir / "ann_accuracy.json"
    reason = f"{path} not found" if recorded is None else f'{path} has no "fp32" entry'
    assert messages(caplog, logging.INFO) == [
        f"{reason}, so the figure has no FP32 ANN line. "
        f"FP32_{architecture}_FashionMNIST.py --mode training --figs_dir {figs_dir} "
        "records its accuracy there"]


def test_fp32_entry_present_logs_nothing(figs_dir, caplog):
    caplog.set_level(logging.INFO, logger="ann2snn")
    write_run(figs_dir, 1)
    record_ann_accuracy(figs_dir, "fp32", {"accuracy": 0.9})

    assert main("accuracy_speed", "LeNet", figs_dir, argv=[]) == 0

    assert messages(caplog, logging.INFO) == []


@pytest.mark.parametrize("figure", ["sops", "sparsity"])
def test_other_figures_ignore_missing_fp32(figs_dir, caplog, figure):
    caplog.set_level(logging.INFO, logger="ann2snn")
    write_run(figs_dir, 1)

    assert main(figure, "LeNet", figs_dir, argv=[]) == 0

    assert messages(caplog, logging.INFO) == []


def test_invalid_ann_accuracy_file_logs_no_info(figs_dir, caplog):
    caplog.set_level(logging.INFO, logger="ann2snn")
    write_run(figs_dir, 1)
    (figs_dir / "ann_accuracy.json").write_text("{not json")

    assert main("accuracy_speed", "LeNet", figs_dir, argv=[]) == 0

    assert messages(caplog, logging.INFO) == []
    assert len(messages(caplog, logging.WARNING)) == 1


# --- The committed figures ---------------------------------------------------------------------


@pytest.mark.parametrize("architecture, figure", COMMITTED_FIGURES)
def test_committed_png_unchanged(tmp_path, architecture, figure):
    figs_copy = tmp_path / "figs"
    shutil.copytree(REPO_ROOT / architecture / "figs", figs_copy)
    output = tmp_path / "new.png"

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / architecture / "figs" / f"{figure}.py"),
         "--figs_dir", str(figs_copy), "--output", str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert "ERROR" not in result.stderr
    committed = REPO_ROOT / architecture / "figs" / figure_file_name(figure, architecture)
    assert output.read_bytes() == committed.read_bytes()
