"""Figures of the spiking runs logged under `<arch>/figs/k<k>/` (see ann2snn.logs).

- accuracy_speed: SNN test accuracy per time step for every k, with the accuracy of
  the quantized ANN of each k and of the FP32 ANN as horizontal lines;
- sops: synaptic operations (SOPs) per image per time step, compared with the ANN's
  operations per image;
- sparsity: positive and negative spikes per image at the last time step, compared
  with the number of hidden neurons.

The scripts in LeNet/figs and MLP/figs call main(). Every plotted number comes from
the logs, the summaries and ann_accuracy.json. A run folder that cannot be read,
contains another architecture's logs or breaks the log definitions is skipped with
a logged error, and main() then writes no figure and returns 1. The labels mark a
run that failed --verify or covers only part of the test set.
"""

import argparse
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

from ann2snn.architectures import get_architecture
from ann2snn.cli import UsageError, check_output_folder, nonempty_path
from ann2snn.data import TEST_SIZE
from ann2snn.logs import (
    ANN_ACCURACY_NAME, SUMMARY_NAME, LogError, check_run_logs, find_runs, read_ann_accuracy,
    read_run_logs, write_bytes_atomically)

logger = logging.getLogger(__name__)

FIGURES = ("accuracy_speed", "sops", "sparsity")
# PNG name prefixes: "scnn" (spiking CNN) for LeNet and "smlp" (spiking MLP) for the MLP.
FILE_PREFIXES = {"LeNet": "scnn", "MLP": "smlp"}
DATASET_NAME = "fashionmnist"
PNG_DPI = 150
# DejaVu Sans ships with matplotlib, so the figures look the same on every machine.
FONT_SETTINGS = {"font.family": "DejaVu Sans"}


def figure_file_name(figure, architecture):
    """Return the default PNG name, e.g. "scnn_sops_fashionmnist.png" for LeNet."""
    return f"{FILE_PREFIXES[architecture]}_{figure}_{DATASET_NAME}.png"


# --- Values computed from the logs ----------------------------------------------------


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_mismatch_counts(run):
    """Return the summary's {layer: mismatching neurons} of --verify, or None.

    None means that the run was simulated without --verify or that the value is not
    an object of non-negative integers.
    """
    counts = run.summary.get("verify_mismatches")
    if isinstance(counts, dict) and all(_is_count(count) for count in counts.values()):
        return counts
    return None


def run_notes(run):
    """Return the notes that the labels of a run carry, e.g. ["failed --verify"].

    A run gets "failed --verify" when a layer has mismatching neurons, and
    "first N test images" when it covers fewer than the TEST_SIZE test images.
    """
    notes = []
    counts = verify_mismatch_counts(run)
    if counts and any(counts.values()):
        notes.append("failed --verify")
    if run.num_images < TEST_SIZE:
        if run.num_images == 1:
            notes.append("first test image")
        else:
            notes.append(f"first {run.num_images:,} test images")
    return notes


def _label_with_notes(label, notes):
    """Return `label` followed by the notes in brackets, e.g. "SNN k=1: ... (failed --verify)"."""
    if not notes:
        return label
    return f"{label} ({', '.join(notes)})"


def stable_from_step(values):
    """Return the first 1-based step from which `values` stays equal to its last value."""
    values = np.asarray(values)
    differing = np.flatnonzero(values != values[-1])
    if differing.size == 0:
        return 1
    return int(differing[-1]) + 2


@dataclass
class AccuracySeries:
    """SNN accuracy of one run over all batches per time step."""

    k: int
    correct: np.ndarray  # correct predictions of all images per time step
    num_images: int
    ann_accuracy: object  # the quantized ANN's accuracy as a fraction, or None if unknown
    notes: tuple = ()  # see run_notes

    @property
    def steps(self):
        return np.arange(1, len(self.correct) + 1)

    @property
    def percent(self):
        return 100.0 * self.correct / self.num_images

    @property
    def final_percent(self):
        return float(self.percent[-1])

    @property
    def stable_from_step(self):
        # Integer counts are compared, so float rounding cannot move the step.
        return stable_from_step(self.correct)

    def label(self):
        label = f"SNN k={self.k}: {self.final_percent:.2f}% from step {self.stable_from_step}"
        return _label_with_notes(label, self.notes)


def _entry_accuracy(ann_accuracy, key, architecture):
    """Return ann_accuracy[key]["accuracy"], or None with a warning when it is absent or invalid.

    An entry whose "architecture" names a network other than `architecture` is
    skipped with a warning too.
    """
    if key not in ann_accuracy:
        return None
    entry = ann_accuracy[key]
    recorded = entry.get("architecture") if isinstance(entry, dict) else None
    if recorded is not None and recorded != architecture:
        logger.warning("ann_accuracy.json: entry %r is for architecture %r, expected %r, so its "
                       "line is not drawn. Record the %s accuracies with the %s training scripts",
                       key, recorded, architecture, architecture, architecture)
        return None
    value = entry.get("accuracy") if isinstance(entry, dict) else None
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    if not valid:
        logger.warning("ann_accuracy.json: entry %r has no accuracy fraction in [0, 1], "
                       "so its line is not drawn", key)
        return None
    return float(value)


def quantized_ann_accuracy(run, ann_accuracy):
    """Return the quantized ANN's accuracy on the run's images, or else its recorded one.

    Order: the NumPy ANN's accuracy on exactly the simulated images (summary's
    numpy_ann_accuracy), then the accuracy stored in the model file, then
    ann_accuracy.json. The last two may come from another number of images.
    """
    for key in ("numpy_ann_accuracy", "ann_accuracy"):
        value = run.summary.get(key)
        if value is not None:
            return float(value)
    return _entry_accuracy(ann_accuracy, f"k{run.k}", run.architecture)


def accuracy_series(run, ann_accuracy=None):
    """Return the AccuracySeries of a run, given the content of ann_accuracy.json as `ann_accuracy`."""
    return AccuracySeries(
        k=run.k,
        correct=run.accuracy.sum(axis=0),
        num_images=run.num_images,
        ann_accuracy=quantized_ann_accuracy(run, ann_accuracy or {}),
        notes=tuple(run_notes(run)),
    )


@dataclass
class SopSeries:
    """Synaptic operations per image of one run per time step, next to the ANN's operations."""

    k: int
    sops_per_image: np.ndarray
    ann_operations_per_image: int
    notes: tuple = ()  # see run_notes

    @property
    def steps(self):
        return np.arange(1, len(self.sops_per_image) + 1)

    @property
    def final_sops_per_image(self):
        return float(self.sops_per_image[-1])

    @property
    def ratio_to_ann(self):
        """Final SOPs per image divided by the ANN's operations per image."""
        return self.final_sops_per_image / self.ann_operations_per_image

    def label(self):
        label = (f"SNN k={self.k}: {self.final_sops_per_image:,.0f} SOPs/image "
                 f"= {self.ratio_to_ann:.3f}x ANN")
        return _label_with_notes(label, self.notes)


def ann_operation_count(run):
    """Return the ANN's operations per image: the summary's count, else ann2snn.architectures."""
    count = run.summary.get("ann_operation_count")
    if count is None:
        count = get_architecture(run.architecture).ann_operation_count()
        logger.info("k=%d: summary has no ann_operation_count, using %s from ann2snn.architectures",
                    run.k, f"{count:,}")
    return int(count)


def sop_series(run):
    """Return the SopSeries of a run: sop_num summed over batches, divided by num_images."""
    return SopSeries(
        k=run.k,
        sops_per_image=run.sop_num.sum(axis=0) / run.num_images,
        ann_operations_per_image=ann_operation_count(run),
        notes=tuple(run_notes(run)),
    )


@dataclass
class SpikeCounts:
    """Positive and negative spikes per image of one run at its last time step."""

    k: int
    time_steps: int
    positive_per_image: float
    negative_per_image: float
    neuron_count: int  # hidden neurons of one image
    notes: tuple = ()  # see run_notes

    @property
    def spikes_per_neuron(self):
        return (self.positive_per_image + self.negative_per_image) / self.neuron_count


def neuron_count(run):
    """Return the hidden neurons per image: the summary's count, else ann2snn.architectures."""
    count = run.summary.get("neuron_count")
    if count is None:
        count = get_architecture(run.architecture).neuron_count()
        logger.info("k=%d: summary has no neuron_count, using %s from ann2snn.architectures",
                    run.k, f"{count:,}")
    return int(count)


def spike_counts(run):
    """Return the SpikeCounts of a run.

    spike_num counts positive plus negative spikes and spike_collect counts positive
    minus negative spikes, so positive = (spike_num + spike_collect) / 2 and
    negative = (spike_num - spike_collect) / 2, summed over batches at the last step.
    """
    total = int(run.spike_num[:, -1].sum())
    net = int(run.spike_collect[:, -1].sum())
    return SpikeCounts(
        k=run.k,
        time_steps=run.time_steps,
        positive_per_image=(total + net) / 2 / run.num_images,
        negative_per_image=(total - net) / 2 / run.num_images,
        neuron_count=neuron_count(run),
        notes=tuple(run_notes(run)),
    )


# --- Loading ------------------------------------------------------------------------------


def load_runs(run_dirs, architecture):
    """Read the runs of {k: run_dir} and return {k: RunLogs} for those that can be plotted.

    A run is skipped with a logged error when its files cannot be read, when its
    summary names another architecture, or when its logs break the definitions
    checked by ann2snn.logs.check_run_logs. A run that failed --verify is kept and
    logged as a warning.
    """
    runs = {}
    for k, run_dir in run_dirs.items():
        try:
            run = read_run_logs(run_dir)
        except LogError as error:
            logger.error("skipping k=%d: %s", k, error)
            continue
        if run.architecture != architecture:
            logger.error("skipping k=%d: %s contains %s logs, expected %s. A figs folder contains "
                         "one network's results, so move that folder to the %s figs folder",
                         k, run_dir, run.architecture, architecture, run.architecture)
            continue
        problems = check_run_logs(run)
        if problems:
            _log_broken_definitions(run, run_dir, problems)
            continue
        _log_verify_result(run, run_dir)
        runs[k] = run
    _log_mixed_settings(runs)
    return runs


def _log_broken_definitions(run, run_dir, problems):
    """Log one error that lists the problems of a skipped run, one per line, and the fix."""
    command = run.summary.get("command")
    if isinstance(command, str) and command.strip():
        fix = f"Rerun the spiking simulation to write them again (recorded command: {command})"
    else:
        fix = f"Rerun Spiking_{run.architecture}_FashionMNIST.py --k {run.k} to write them again"
    listing = "".join(f"\n  {problem}" for problem in problems)
    logger.error("skipping k=%d: the logs in %s break their definitions. %s:%s",
                 run.k, run_dir, fix, listing)


def _log_verify_result(run, run_dir):
    """Warn when the summary records failed --verify or an invalid verify_mismatches."""
    recorded = run.summary.get("verify_mismatches")
    counts = verify_mismatch_counts(run)
    if recorded is not None and counts is None:
        logger.warning("k=%d: %s: verify_mismatches is %r, expected an object of non-negative "
                       "mismatch counts per layer, so the figure does not show whether this run "
                       "passed --verify", run.k, Path(run_dir) / SUMMARY_NAME, recorded)
    elif counts and any(counts.values()):
        listing = ", ".join(f"{layer} {count}" for layer, count in counts.items())
        logger.warning("k=%d: the run in %s failed --verify: the net spike counts of some "
                       "neurons differ from the quantized ANN (mismatching neurons per layer, "
                       "summed over the images: %s). Its labels say \"failed --verify\"",
                       run.k, run_dir, listing)


def _log_mixed_settings(runs):
    time_steps = {k: run.time_steps for k, run in runs.items()}
    if len(set(time_steps.values())) > 1:
        listing = ", ".join(f"k={k}: {steps}" for k, steps in time_steps.items())
        logger.info("the runs have different time_steps (%s), so each run is plotted over its "
                    "own time steps", listing)
    num_images = {k: run.num_images for k, run in runs.items()}
    if len(set(num_images.values())) > 1:
        listing = ", ".join(f"k={k}: {count}" for k, count in num_images.items())
        logger.warning("the runs cover different numbers of test images (%s). All values are "
                       "per image, but the accuracies come from different test subsets", listing)


def _read_ann_accuracy_or_warn(figs_dir):
    """Return the content of ann_accuracy.json, {} when it is missing, or None when it is invalid."""
    try:
        return read_ann_accuracy(figs_dir)
    except LogError as error:
        logger.warning("ANN accuracies not drawn from ann_accuracy.json: %s", error)
        return None


def _log_missing_fp32_accuracy(figs_dir, ann_accuracy, architecture):
    """Log where the FP32 accuracy was looked for when ann_accuracy.json lacks it."""
    path = Path(figs_dir) / ANN_ACCURACY_NAME
    if not path.exists():
        reason = f"{path} not found"
    elif "fp32" not in ann_accuracy:
        reason = f'{path} has no "fp32" entry'
    else:
        return
    logger.info("%s, so the figure has no FP32 ANN line. FP32_%s_FashionMNIST.py --mode training "
                "--figs_dir %s records its accuracy there", reason, architecture, figs_dir)


def _run_colors(runs):
    """Return one color of the default cycle per plotted k, assigned in the order of k."""
    return {k: f"C{index % 10}" for index, k in enumerate(runs)}


def _time_steps_note(runs):
    """Return "T = 20" when all runs share their time_steps, else "own T per run"."""
    steps = sorted({run.time_steps for run in runs.values()})
    if len(steps) == 1:
        return f"T = {steps[0]}"
    return "own T per run"


# --- Figures ------------------------------------------------------------------------------


def _use_log_scale_if_positive(ax):
    """Switch the y axis to log scale when it shows a positive value.

    SNN counts can be orders of magnitude below the ANN reference line, and a linear
    axis would flatten them to zero. Zero values are not drawn on the log axis, but
    their bar labels still show them.
    """
    values = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    values += [np.array([patch.get_height()]) for patch in ax.patches]
    if any(np.any(array > 0) for array in values):
        ax.set_yscale("log")


def plot_accuracy_speed(figure, runs, ann_accuracy, architecture):
    """Draw SNN accuracy (%) per time step, with ANN accuracies as horizontal lines."""
    from matplotlib.ticker import MaxNLocator

    ax = figure.add_subplot()
    colors = _run_colors(runs)
    for k, run in runs.items():
        series = accuracy_series(run, ann_accuracy)
        small = len(series.steps) <= 40
        ax.plot(series.steps, series.percent, color=colors[k], marker="o" if small else None,
                markersize=3, label=series.label())
        ax.plot([series.stable_from_step], [series.final_percent], color=colors[k], marker="*",
                markersize=12, linestyle="none")
        if series.ann_accuracy is not None:
            ax.axhline(100.0 * series.ann_accuracy, color=colors[k], linestyle="--", linewidth=1,
                       label=f"quantized ANN k={k}: {100.0 * series.ann_accuracy:.2f}%")

    fp32_accuracy = _entry_accuracy(ann_accuracy, "fp32", architecture)
    if fp32_accuracy is not None:
        ax.axhline(100.0 * fp32_accuracy, color="black", linestyle=":", linewidth=1.2,
                   label=f"FP32 ANN: {100.0 * fp32_accuracy:.2f}%")

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Time step")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(f"{architecture} on Fashion-MNIST: SNN accuracy per time step\n"
                 "(star: first step from which the SNN keeps its final accuracy)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def plot_sops(figure, runs, ann_accuracy, architecture):
    """Draw SOPs per image per time step, with the ANN's operations per image as a line."""
    del ann_accuracy  # Unused: the parameter only keeps the signature of the other figures.
    from matplotlib.ticker import MaxNLocator

    ax = figure.add_subplot()
    colors = _run_colors(runs)
    ann_operations = set()
    for k, run in runs.items():
        series = sop_series(run)
        ann_operations.add(series.ann_operations_per_image)
        small = len(series.steps) <= 40
        ax.plot(series.steps, series.sops_per_image, color=colors[k], marker="o" if small else None,
                markersize=3, label=series.label())
        ax.annotate(f"{series.ratio_to_ann:.3f}x", xy=(series.steps[-1], series.final_sops_per_image),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=colors[k])
    for operations in sorted(ann_operations):
        ax.axhline(operations, color="black", linestyle="--", linewidth=1,
                   label=f"ANN: {operations:,} operations/image")

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Room on the right for the ratio labels at the last step.
    ax.margins(x=0.1)
    _use_log_scale_if_positive(ax)
    ax.set_xlabel("Time step")
    ax.set_ylabel("Operations per image")
    ax.set_title(f"{architecture} on Fashion-MNIST: synaptic operations per image\n"
                 "(SNN SOPs so far vs. the ANN's operations)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def plot_sparsity(figure, runs, ann_accuracy, architecture):
    """Draw positive and negative spikes per image at the last step, next to the neuron count."""
    del ann_accuracy  # Unused: the parameter only keeps the signature of the other figures.
    ax = figure.add_subplot()
    counts = [spike_counts(run) for run in runs.values()]
    positions = np.arange(len(counts))
    width = 0.38
    positive = [count.positive_per_image for count in counts]
    negative = [count.negative_per_image for count in counts]

    positive_bars = ax.bar(positions - width / 2, positive, width, color="tab:red",
                           label="positive spikes/image")
    negative_bars = ax.bar(positions + width / 2, negative, width, color="tab:blue",
                           label="negative spikes/image")
    ax.bar_label(positive_bars, labels=[f"{value:,.1f}" for value in positive], fontsize=8, padding=2)
    ax.bar_label(negative_bars, labels=[f"{value:,.1f}" for value in negative], fontsize=8, padding=2)
    for neurons in sorted({count.neuron_count for count in counts}):
        ax.axhline(neurons, color="black", linestyle="--", linewidth=1,
                   label=f"hidden neurons: {neurons:,}")

    mixed_steps = len({count.time_steps for count in counts}) > 1
    tick_labels = []
    for count in counts:
        lines = [f"k={count.k}", f"{count.spikes_per_neuron:.3f} spikes/neuron"]
        if mixed_steps:
            lines.append(f"T = {count.time_steps}")
        if count.notes:
            lines.append(f"({', '.join(count.notes)})")
        tick_labels.append("\n".join(lines))
    ax.set_xticks(positions)
    ax.set_xticklabels(tick_labels, fontsize=8)
    ax.set_ylabel("Spikes per image")
    ax.set_title(f"{architecture} on Fashion-MNIST: spikes per image at the last time step "
                 f"({_time_steps_note(runs)})", fontsize=10)
    _use_log_scale_if_positive(ax)
    if ax.get_yscale() == "log":
        # Headroom above the neuron line keeps the legend off the bars and the line.
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * 5)
    else:
        ax.margins(y=0.2)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


FIGURE_FUNCTIONS = {
    "accuracy_speed": plot_accuracy_speed,
    "sops": plot_sops,
    "sparsity": plot_sparsity,
}

FIGURE_DESCRIPTIONS = {
    "accuracy_speed": "SNN accuracy per time step next to the ANN accuracies",
    "sops": "synaptic operations per image next to the ANN's operations",
    "sparsity": "positive and negative spikes per image next to the neuron count",
}


# --- Command line -------------------------------------------------------------------------


def build_parser(figure, architecture, default_figs_dir):
    """Return the argument parser of one figure script."""
    parser = argparse.ArgumentParser(
        description=f"Plot the {FIGURE_DESCRIPTIONS[figure]} for the {architecture} runs "
                    "logged in FIGS_DIR/k<k>/ into a PNG file.")
    parser.add_argument(
        "--figs_dir", type=_path, default=Path(default_figs_dir),
        help="folder with the k<k> run folders and ann_accuracy.json (default: %(default)s)")
    parser.add_argument(
        "--output", type=_path, default=None,
        help=f"PNG file to write (default: FIGS_DIR/{figure_file_name(figure, architecture)})")
    parser.add_argument(
        "--show", action="store_true",
        help="also open the figure in a window (default: only write the PNG with the Agg backend)")
    return parser


def _configure_logging():
    """Send INFO and higher messages to stderr unless the root logger already has a handler."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")


def save_png(figure, output):
    """Render `figure` as PNG and write it to `output` atomically, creating its folder."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(output, buffer.getvalue())


def _path(text):
    """Parse a path option and reject an empty one, because Path("") is the current folder."""
    return Path(nonempty_path(text))


def main(figure, architecture, default_figs_dir, argv=None):
    """Run one figure script and return its exit code.

    The code is 0 when the PNG was written, with every run folder. It is 1, with no PNG
    written, when the figs folder or its run folders are missing or when a run folder
    was skipped: a figure without that run would replace a complete one. `argv`
    defaults to sys.argv[1:]. Invalid options exit with code 2 through argparse.
    """
    if figure not in FIGURE_FUNCTIONS:
        raise ValueError(f"unknown figure {figure!r}: expected one of {FIGURES}")
    get_architecture(architecture)  # Raises ValueError for an unknown name.

    parser = build_parser(figure, architecture, default_figs_dir)
    args = parser.parse_args(argv)
    figs_dir = args.figs_dir
    output = args.output or figs_dir / figure_file_name(figure, architecture)
    if output.suffix.lower() != ".png":
        parser.error(f"--output must end with .png, got {str(output)!r}")
    if output.is_dir():
        # The PNG is renamed into place, and a rename cannot replace a folder.
        parser.error(f"the output path {output} is a folder, not a PNG file: pass --output with "
                     "the path of a PNG file, or move the folder away")
    _configure_logging()

    if not figs_dir.is_dir():
        logger.error("figs folder %s not found; pass the folder with the k<k> run folders "
                     "as --figs_dir", figs_dir)
        return 1
    try:
        check_output_folder(output.parent, "--output" if args.output else "--figs_dir")
    except UsageError as error:
        # The logs stay where they are, so the fix for a read-only figs folder is --output.
        hint = "" if args.output else " To keep the logs there, pass --output with a PNG path elsewhere."
        parser.error(f"{error}{hint}")
    try:
        run_dirs = find_runs(figs_dir)
    except LogError as error:
        logger.error("%s", error)
        return 1
    if not run_dirs:
        logger.error("no run folders k<k> in %s: run the spiking simulation first, which "
                     "writes figs/k<k>/", figs_dir)
        return 1
    runs = load_runs(run_dirs, architecture)
    skipped = [k for k in run_dirs if k not in runs]
    if skipped:
        # A figure without some runs would replace a complete one, so nothing is written.
        _log_skipped_runs(output, skipped, figs_dir)
        return 1
    ann_accuracy = _read_ann_accuracy_or_warn(figs_dir)
    if ann_accuracy is None:
        ann_accuracy = {}
    elif figure == "accuracy_speed":
        _log_missing_fp32_accuracy(figs_dir, ann_accuracy, architecture)

    if not args.show:
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(FONT_SETTINGS):
        fig = plt.figure(figsize=(7.5, 5.5))
        try:
            FIGURE_FUNCTIONS[figure](fig, runs, ann_accuracy, architecture)
            save_png(fig, output)
            print(f"wrote {output}")
            if args.show:
                plt.show()
        finally:
            plt.close(fig)
    return 0


def _log_skipped_runs(output, skipped, figs_dir):
    """Log that `output` was not written because the runs of the k values in `skipped` were skipped."""
    listing = ", ".join(f"k={k}" for k in skipped)
    if len(skipped) == 1:
        logger.error("%s not written: the run %s was skipped (see the errors above). Rerun its "
                     "spiking simulation, or move its folder out of %s, and run this script again",
                     output, listing, figs_dir)
    else:
        logger.error("%s not written: the runs %s were skipped (see the errors above). Rerun their "
                     "spiking simulations, or move their folders out of %s, and run this script "
                     "again", output, listing, figs_dir)
