"""Tests of ann2snn.plotting and of the figure scripts in LeNet/figs and MLP/figs."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from ann2snn.architectures import get_architecture
from ann2snn.logs import find_runs, read_run_logs, record_ann_accuracy, write_run_logs
from ann2snn.plotting import (
    accuracy_series, figure_file_name, load_runs, main, plot_accuracy_speed, plot_sops,
    plot_sparsity, sop_series, spike_counts, stable_from_step)

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("accuracy_speed", "sops", "sparsity")
PARTIAL_NOTE = "(first 7 test images)"

# A run of 2 batches (4 and 3 images) x 5 time steps with values chosen by hand:
# correct predictions per step over both batches are 1, 5, 6, 6, 6, so the SNN ends at
# 6/7 = 85.71% and keeps it from step 3 on, although both batches change at step 4.
# Its 7 images are part of the test set, so its labels end with PARTIAL_NOTE.
HAND_ACCURACY = [[1, 3, 4, 3, 3], [0, 2, 2, 3, 3]]
HAND_POSITIVE = [[2, 4, 6, 8, 10], [1, 2, 3, 4, 5]]  # cumulative positive spikes
HAND_NEGATIVE = [[0, 0, 1, 1, 2], [0, 1, 1, 1, 1]]  # cumulative negative spikes
HAND_SOPS = [[100, 200, 300, 400, 500], [50, 100, 150, 200, 250]]


def hand_logs():
    positive = np.array(HAND_POSITIVE)
    negative = np.array(HAND_NEGATIVE)
    return {
        "accuracy": np.array(HAND_ACCURACY),
        "spike_num": positive + negative,
        "spike_collect": positive - negative,
        "sop_num": np.array(HAND_SOPS),
    }


def generated_logs(time_steps, batch_sizes=(4, 3)):
    """Return consistent logs for any number of time steps (counts grow every step)."""
    steps = np.arange(1, time_steps + 1)
    accuracy = np.array([[min(size, step) for step in steps] for size in batch_sizes])
    positive = np.array([3 * steps for _ in batch_sizes])
    negative = np.array([steps // 2 for _ in batch_sizes])
    return {
        "accuracy": accuracy,
        "spike_num": positive + negative,
        "spike_collect": positive - negative,
        "sop_num": 40 * positive,
    }


def write_run(figs_dir, k, architecture="LeNet", time_steps=5, logs=None, **summary_changes):
    """Write run k into figs_dir/k<k>: `logs`, else the hand-made logs for 5 steps or generated ones."""
    if logs is not None:
        run_logs = logs
    elif time_steps == 5:
        run_logs = hand_logs()
    else:
        run_logs = generated_logs(time_steps)
    summary = {
        "architecture": architecture,
        "k": k,
        "time_steps": time_steps,
        "batch_size": 4,
        "num_images": 7,
        "num_batches": 2,
        "batch_sizes": [4, 3],
        "neuron_count": 50,
        "ann_operation_count": 1000,
        "ann_accuracy": 0.8,
    }
    summary.update(summary_changes)
    run_dir = Path(figs_dir) / f"k{k}"
    write_run_logs(run_dir, run_logs, summary)
    return run_dir


def assert_valid_png(path):
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000, f"{path} has only {len(data)} bytes"


def legend_texts(figure):
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def error_messages(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def info_messages(caplog):
    return [record.getMessage() for record in caplog.records]


@pytest.fixture
def figs_dir(tmp_path):
    path = tmp_path / "figs"
    path.mkdir()
    return path


# --- Values and labels computed from the logs ----------------------------------------------


@pytest.mark.parametrize("values, expected_step", [
    ([5, 5, 5], 1),
    ([7], 1),
    ([1, 2, 3], 3),
    ([3, 1, 3], 3),
    ([1, 3, 3, 2, 3, 3], 5),
    ([1, 5, 6, 6, 6], 3),
])
def test_stable_from_step(values, expected_step):
    assert stable_from_step(values) == expected_step


def test_accuracy_series_hand_values(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1))

    series = accuracy_series(run, {})

    np.testing.assert_array_equal(series.steps, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(series.correct, [1, 5, 6, 6, 6])
    np.testing.assert_allclose(series.percent, [100 / 7, 500 / 7, 600 / 7, 600 / 7, 600 / 7])
    assert series.final_percent == pytest.approx(85.714285714)
    assert series.stable_from_step == 3
    assert series.ann_accuracy == 0.8
    assert series.label() == f"SNN k=1: 85.71% from step 3 {PARTIAL_NOTE}"


def test_ann_accuracy_from_json_fallback(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1, ann_accuracy=None))

    assert accuracy_series(run, {"k1": {"accuracy": 0.85}}).ann_accuracy == 0.85
    assert accuracy_series(run, {"k2": {"accuracy": 0.85}}).ann_accuracy is None
    assert accuracy_series(run, {}).ann_accuracy is None


def test_summary_ann_accuracy_wins_over_json(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1, ann_accuracy=0.8))

    assert accuracy_series(run, {"k1": {"accuracy": 0.85}}).ann_accuracy == 0.8


def test_invalid_json_entry_is_skipped(figs_dir, caplog):
    run = read_run_logs(write_run(figs_dir, 1, ann_accuracy=None))

    series = accuracy_series(run, {"k1": {"accuracy": "high"}})

    assert series.ann_accuracy is None
    assert any("entry 'k1' has no accuracy fraction" in message for message in info_messages(caplog))


def test_sop_series_hand_values(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1))

    series = sop_series(run)

    np.testing.assert_allclose(series.sops_per_image, np.array([150, 300, 450, 600, 750]) / 7)
    assert series.ann_operations_per_image == 1000
    assert series.final_sops_per_image == pytest.approx(750 / 7)
    assert series.ratio_to_ann == pytest.approx(750 / 7 / 1000)
    assert series.label() == f"SNN k=1: 107 SOPs/image = 0.107x ANN {PARTIAL_NOTE}"


def test_sop_series_uses_architecture_count(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1, architecture="MLP"))
    del run.summary["ann_operation_count"]

    assert sop_series(run).ann_operations_per_image == get_architecture("MLP").ann_operation_count()


def test_spike_counts_hand_values(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1))

    counts = spike_counts(run)

    # Last step: positive spikes 10 + 5 = 15 and negative spikes 2 + 1 = 3 over 7 images.
    assert counts.positive_per_image == pytest.approx(15 / 7)
    assert counts.negative_per_image == pytest.approx(3 / 7)
    assert counts.neuron_count == 50
    assert counts.spikes_per_neuron == pytest.approx(18 / 7 / 50)
    assert counts.time_steps == 5


def test_spike_counts_uses_architecture_count(figs_dir):
    run = read_run_logs(write_run(figs_dir, 1))
    run.summary["neuron_count"] = None

    assert spike_counts(run).neuron_count == get_architecture("LeNet").neuron_count()


# --- Figure contents ----------------------------------------------------------------------


def test_accuracy_figure_labels(figs_dir):
    write_run(figs_dir, 0, ann_accuracy=None)
    write_run(figs_dir, 1, ann_accuracy=0.8)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    ann_accuracy = {"fp32": {"accuracy": 0.9001}, "k0": {"accuracy": 0.75}}
    figure = Figure()

    plot_accuracy_speed(figure, runs, ann_accuracy, "LeNet")

    assert legend_texts(figure) == [
        f"SNN k=0: 85.71% from step 3 {PARTIAL_NOTE}",
        "quantized ANN k=0: 75.00%",
        f"SNN k=1: 85.71% from step 3 {PARTIAL_NOTE}",
        "quantized ANN k=1: 80.00%",
        "FP32 ANN: 90.01%",
    ]


def test_accuracy_figure_without_ann_values(figs_dir):
    write_run(figs_dir, 1, ann_accuracy=None)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_accuracy_speed(figure, runs, {}, "LeNet")

    assert legend_texts(figure) == [f"SNN k=1: 85.71% from step 3 {PARTIAL_NOTE}"]


def test_sops_figure_labels(figs_dir):
    write_run(figs_dir, 1)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_sops(figure, runs, {}, "LeNet")

    assert legend_texts(figure) == [
        f"SNN k=1: 107 SOPs/image = 0.107x ANN {PARTIAL_NOTE}",
        "ANN: 1,000 operations/image",
    ]
    annotations = [child.get_text() for child in figure.axes[0].texts]
    assert annotations == ["0.107x"]


def test_sparsity_figure_values(figs_dir):
    write_run(figs_dir, 1)
    write_run(figs_dir, 3)
    runs = load_runs(find_runs(figs_dir), "LeNet")
    figure = Figure()

    plot_sparsity(figure, runs, {}, "LeNet")

    ax = figure.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    np.testing.assert_allclose(heights, [15 / 7, 15 / 7, 3 / 7, 3 / 7])
    assert legend_texts(figure) == [
        "hidden neurons: 50", "positive spikes/image", "negative spikes/image"]
    tick_labels = [label.get_text() for label in ax.get_xticklabels()]
    assert tick_labels == [f"k=1\n0.051 spikes/neuron\n{PARTIAL_NOTE}",
                           f"k=3\n0.051 spikes/neuron\n{PARTIAL_NOTE}"]
    assert "(T = 5)" in ax.get_title()


# --- main(): outputs and options ------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["LeNet", "MLP"])
@pytest.mark.parametrize("figure", FIGURES)
def test_main_writes_named_png(figs_dir, capsys, figure, architecture):
    write_run(figs_dir, 0, architecture=architecture)
    write_run(figs_dir, 1, architecture=architecture)
    record_ann_accuracy(figs_dir, "fp32", {"accuracy": 0.9})

    assert main(figure, architecture, figs_dir, argv=[]) == 0

    prefix = {"LeNet": "scnn", "MLP": "smlp"}[architecture]
    output = figs_dir / f"{prefix}_{figure}_fashionmnist.png"
    assert_valid_png(output)
    assert capsys.readouterr().out == f"wrote {output}\n"


def test_main_output_option(figs_dir, tmp_path):
    write_run(figs_dir, 1)
    output = tmp_path / "new" / "folder" / "accuracy.png"

    assert main("accuracy_speed", "LeNet", figs_dir, argv=["--output", str(output)]) == 0

    assert_valid_png(output)
    assert not (figs_dir / figure_file_name("accuracy_speed", "LeNet")).exists()


def test_main_figs_dir_option(figs_dir, tmp_path):
    write_run(figs_dir, 1)

    assert main("sops", "LeNet", tmp_path / "unused", argv=["--figs_dir", str(figs_dir)]) == 0

    assert_valid_png(figs_dir / "scnn_sops_fashionmnist.png")


def test_main_rejects_read_only_figs_dir(read_only_folder, capsys):
    # The output folder is checked before the run folders are looked for.
    with pytest.raises(SystemExit) as exit_info:
        main("sops", "LeNet", read_only_folder, argv=[])

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"cannot write to --figs_dir {read_only_folder}" in error
    assert "pass --output with a PNG path elsewhere" in error
    assert sorted(path.name for path in read_only_folder.iterdir()) == ["kept.txt"]


def test_main_rejects_output_below_file(figs_dir, tmp_path, capsys):
    write_run(figs_dir, 1)
    a_file = tmp_path / "a_file"
    a_file.write_text("kept\n")

    with pytest.raises(SystemExit) as exit_info:
        main("sops", "LeNet", figs_dir, argv=["--output", str(a_file / "sops.png")])

    assert exit_info.value.code == 2
    assert f"--output {a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "kept\n"


def test_main_rejects_non_png_output(figs_dir, tmp_path, capsys):
    write_run(figs_dir, 1)

    with pytest.raises(SystemExit) as exit_info:
        main("sops", "LeNet", figs_dir, argv=["--output", str(tmp_path / "sops.pdf")])

    assert exit_info.value.code == 2
    assert "--output must end with .png" in capsys.readouterr().err


def test_main_rejects_unknown_figure(figs_dir):
    with pytest.raises(ValueError, match="unknown figure"):
        main("latency", "LeNet", figs_dir, argv=[])


def test_main_uses_no_missing_fonts(figs_dir, caplog):
    write_run(figs_dir, 1)
    caplog.set_level(logging.WARNING, logger="matplotlib")

    assert main("sparsity", "LeNet", figs_dir, argv=[]) == 0

    font_warnings = [record for record in caplog.records if record.name.startswith("matplotlib")]
    assert font_warnings == []


# --- main(): robustness ----------------------------------------------------------------------


def test_no_runs_exits_1(figs_dir, caplog):
    (figs_dir / "k1.tmp-123-abc").mkdir()

    assert main("accuracy_speed", "LeNet", figs_dir, argv=[]) == 1

    assert any("no run folders k<k>" in message for message in error_messages(caplog))
    assert not (figs_dir / "scnn_accuracy_speed_fashionmnist.png").exists()


def test_missing_figs_dir_exits_1(tmp_path, caplog):
    assert main("sops", "LeNet", tmp_path / "missing", argv=[]) == 1

    assert any("not found" in message for message in error_messages(caplog))


@pytest.mark.parametrize("figure", FIGURES)
def test_some_k_present(figs_dir, caplog, figure):
    write_run(figs_dir, 0)
    write_run(figs_dir, 2)

    assert main(figure, "LeNet", figs_dir, argv=[]) == 0

    assert error_messages(caplog) == []
    assert list(load_runs(find_runs(figs_dir), "LeNet")) == [0, 2]
    assert_valid_png(figs_dir / figure_file_name(figure, "LeNet"))


@pytest.mark.parametrize("figure", FIGURES)
def test_wrong_line_count_skips_k(figs_dir, caplog, figure):
    write_run(figs_dir, 0)
    bad_dir = write_run(figs_dir, 1)
    bad_log = bad_dir / "sop_num.txt"
    bad_log.write_text("".join(f"{line}\n" for line in bad_log.read_text().splitlines()[:7]))

    assert main(figure, "LeNet", figs_dir, argv=[]) == 1

    assert error_messages(caplog)[0] == (
        f"skipping k=1: {bad_log}: 7 lines, expected 10 (2 batches x 5 time steps)")
    assert "not written: the run k=1 was skipped" in error_messages(caplog)[1]
    assert list(load_runs(find_runs(figs_dir), "LeNet")) == [0]
    assert not (figs_dir / figure_file_name(figure, "LeNet")).exists()


@pytest.mark.parametrize("figure", FIGURES)
def test_non_integer_line_skips_k(figs_dir, caplog, figure):
    bad_dir = write_run(figs_dir, 0)
    write_run(figs_dir, 1)
    bad_log = bad_dir / "accuracy.txt"
    lines = bad_log.read_text().splitlines()
    lines[3] = "three"
    bad_log.write_text("\n".join(lines) + "\n")

    assert main(figure, "LeNet", figs_dir, argv=[]) == 1

    assert error_messages(caplog)[0] == (
        f"skipping k=0: {bad_log}: line 4 is 'three', expected an integer")
    assert "not written: the run k=0 was skipped" in error_messages(caplog)[1]
    assert not (figs_dir / figure_file_name(figure, "LeNet")).exists()


def test_all_runs_broken_exits_1(figs_dir, caplog):
    for k in (0, 1):
        run_dir = write_run(figs_dir, k)
        (run_dir / "spike_num.txt").write_text("1\n")

    assert main("sparsity", "LeNet", figs_dir, argv=[]) == 1

    messages = error_messages(caplog)
    assert len(messages) == 3
    assert "not written: the runs k=0, k=1 were skipped" in messages[-1]
    assert not (figs_dir / figure_file_name("sparsity", "LeNet")).exists()


def test_other_architecture_skips_k(figs_dir, caplog):
    write_run(figs_dir, 0, architecture="LeNet")
    write_run(figs_dir, 1, architecture="MLP")

    assert main("sops", "LeNet", figs_dir, argv=[]) == 1

    assert error_messages(caplog)[0] == (
        f"skipping k=1: {figs_dir / 'k1'} contains MLP logs, expected LeNet. A figs folder "
        f"contains one network's results, so move that folder to the MLP figs folder")
    assert "not written: the run k=1 was skipped" in error_messages(caplog)[1]


def test_inconsistent_values_skip_run(figs_dir, caplog):
    run_dir = write_run(figs_dir, 1)
    (run_dir / "sop_num.txt").write_text("5\n4\n3\n2\n1\n5\n4\n3\n2\n1\n")

    assert main("sops", "LeNet", figs_dir, argv=[]) == 1

    errors = error_messages(caplog)
    assert "\n  sop_num.txt: a cumulative count decreases" in errors[0]
    assert "not written: the run k=1 was skipped" in errors[-1]


@pytest.mark.parametrize("figure", FIGURES)
def test_mixed_time_steps_are_logged(figs_dir, caplog, figure):
    caplog.set_level(logging.INFO, logger="ann2snn")
    write_run(figs_dir, 0, time_steps=5)
    write_run(figs_dir, 1, time_steps=8, ann_accuracy=None)

    assert main(figure, "LeNet", figs_dir, argv=[]) == 0

    assert any("different time_steps (k=0: 5, k=1: 8)" in message for message in info_messages(caplog))
    assert_valid_png(figs_dir / figure_file_name(figure, "LeNet"))


def draw_figures(runs, architecture="LeNet"):
    """Return the accuracy, SOP and sparsity figures of `runs`, without ANN accuracies."""
    figures = (Figure(), Figure(), Figure())
    plot_accuracy_speed(figures[0], runs, {}, architecture)
    plot_sops(figures[1], runs, {}, architecture)
    plot_sparsity(figures[2], runs, {}, architecture)
    return figures


def test_mixed_time_steps_curve_lengths(figs_dir):
    write_run(figs_dir, 0, time_steps=5)
    write_run(figs_dir, 1, time_steps=8)
    runs = load_runs(find_runs(figs_dir), "LeNet")

    accuracy_figure, sops_figure, sparsity_figure = draw_figures(runs)

    for figure in (accuracy_figure, sops_figure):
        curves = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("SNN")]
        assert [list(line.get_xdata()) for line in curves] == [[1, 2, 3, 4, 5], list(range(1, 9))]
    tick_labels = [label.get_text() for label in sparsity_figure.axes[0].get_xticklabels()]
    assert [label.splitlines()[2] for label in tick_labels] == ["T = 5", "T = 8"]


def test_invalid_ann_accuracy_json_warns(figs_dir, caplog):
    write_run(figs_dir, 1)
    (figs_dir / "ann_accuracy.json").write_text("{not json")

    assert main("accuracy_speed", "LeNet", figs_dir, argv=[]) == 0

    assert any("ann_accuracy.json" in message for message in info_messages(caplog))
    assert_valid_png(figs_dir / figure_file_name("accuracy_speed", "LeNet"))


# --- Scripts run as subprocesses ------------------------------------------------------------


def script_environment():
    """Return an environment in which ann2snn is importable only through the script's bootstrap."""
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)
    environment.pop("MPLBACKEND", None)
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return environment


def copy_repository_layout(tmp_path, architecture, figure):
    """Copy one figure script into tmp_path/repo/<architecture>/figs and link the package.

    The copy reads and writes its default figs folder under tmp_path, never in the repository.
    """
    repo = tmp_path / "repo"
    figs_dir = repo / architecture / "figs"
    figs_dir.mkdir(parents=True)
    (repo / "ann2snn").symlink_to(REPO_ROOT / "ann2snn", target_is_directory=True)
    shutil.copy(REPO_ROOT / architecture / "figs" / f"{figure}.py", figs_dir)
    return figs_dir


def run_script(script, cwd, *arguments):
    return subprocess.run(
        [sys.executable, str(script), *arguments], cwd=cwd, env=script_environment(),
        capture_output=True, text=True, timeout=120)


def test_script_from_architecture_folder(tmp_path):
    figs_dir = copy_repository_layout(tmp_path, "LeNet", "sops")
    write_run(figs_dir, 1)

    result = run_script(Path("figs") / "sops.py", figs_dir.parent)

    assert result.returncode == 0, result.stderr
    output = figs_dir / "scnn_sops_fashionmnist.png"
    assert result.stdout == f"wrote {output}\n"
    assert_valid_png(output)


def test_script_from_figs_folder(tmp_path):
    figs_dir = copy_repository_layout(tmp_path, "MLP", "sparsity")
    write_run(figs_dir, 0, architecture="MLP")
    write_run(figs_dir, 1, architecture="MLP")

    result = run_script("sparsity.py", figs_dir)

    assert result.returncode == 0, result.stderr
    output = figs_dir / "smlp_sparsity_fashionmnist.png"
    assert result.stdout == f"wrote {output}\n"
    assert_valid_png(output)


def test_script_without_runs_exits_1(tmp_path):
    figs_dir = copy_repository_layout(tmp_path, "MLP", "accuracy_speed")

    result = run_script("accuracy_speed.py", figs_dir)

    assert result.returncode == 1
    assert "no run folders k<k>" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("architecture", ["LeNet", "MLP"])
@pytest.mark.parametrize("figure", FIGURES)
def test_repository_script_with_options(tmp_path, architecture, figure):
    figs_dir = tmp_path / "figs"
    write_run(figs_dir, 1, architecture=architecture)
    output = tmp_path / "out.png"

    result = run_script(REPO_ROOT / architecture / "figs" / f"{figure}.py", tmp_path,
                        "--figs_dir", str(figs_dir), "--output", str(output))

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {output}\n"
    assert_valid_png(output)


def test_repository_script_help(tmp_path):
    result = run_script(REPO_ROOT / "LeNet" / "figs" / "sops.py", tmp_path, "--help")

    assert result.returncode == 0
    for option in ("--figs_dir", "--output", "--show"):
        assert option in result.stdout
    assert f"(default: {REPO_ROOT / 'LeNet' / 'figs'})" in " ".join(result.stdout.split())

