"""Spiking-simulation logs: writing, reading and checking the files under `figs/`.

A run directory `figs/k<k>/` contains four logs and `summary.json`. Every log is a
text file with one integer per line and one line per batch per time step, in batch
order and, within a batch, in time step order:

- `accuracy.txt`: correct predictions of the batch at that step;
- `spike_num.txt`: spikes of either sign emitted up to that step by all hidden
  neurons of the batch (cumulative);
- `spike_collect.txt`: net spikes (positive minus negative) up to that step, same neurons;
- `sop_num.txt`: synaptic operations of the batch up to that step (cumulative).

`figs/ann_accuracy.json` stores the training results per key ("fp32", "k0", "k1", ...).
An entry may name its network under the key "architecture". A figs folder contains the
results of one architecture, and check_figs_architecture enforces this before a script writes.
"""

import json
import logging
import math
import numbers
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # Windows has no flock.
    fcntl = None

from ann2snn.architectures import ARCHITECTURES, get_architecture
from ann2snn.cli import UsageError

logger = logging.getLogger(__name__)

LOG_NAMES = ("accuracy", "spike_num", "spike_collect", "sop_num")
SUMMARY_NAME = "summary.json"
ANN_ACCURACY_NAME = "ann_accuracy.json"

# Only folders named exactly k<integer> are runs. The temporary and aside folders of
# write_run_logs ("k1.tmp-...", "k1.old-...") do not match.
RUN_DIR_PATTERN = re.compile(r"^k(\d+)$")
_INTEGER_LINE = re.compile(r"^[+-]?\d+$")

# Summary keys that read_run_logs requires. write_run_logs fills in the optional keys
# neuron_count, ann_operation_count, ann_accuracy and snn_accuracy when they are missing.
REQUIRED_SUMMARY_KEYS = (
    "architecture", "k", "time_steps", "batch_size", "num_images", "num_batches", "batch_sizes")
# Summary counts above this bound do not fit into the int64 values that the figures compute with.
MAX_COUNT = np.iinfo(np.int64).max


class LogError(Exception):
    """A log file or summary that is missing or invalid. The message names the file."""


@dataclass
class RunLogs:
    """The logs of one run directory: int64 arrays of shape (num_batches, time_steps)."""

    path: Path
    summary: dict
    accuracy: np.ndarray
    spike_num: np.ndarray
    spike_collect: np.ndarray
    sop_num: np.ndarray

    @property
    def k(self):
        return self.summary["k"]

    @property
    def architecture(self):
        return self.summary["architecture"]

    @property
    def time_steps(self):
        return self.summary["time_steps"]

    @property
    def num_images(self):
        return self.summary["num_images"]

    @property
    def batch_sizes(self):
        return list(self.summary["batch_sizes"])


def run_dir_name(k):
    """Return the run directory name of quantization level k ("k1" for k=1)."""
    return f"k{k}"


def log_path(run_dir, name):
    """Return the path of log `name` (one of LOG_NAMES) in run_dir."""
    return Path(run_dir) / f"{name}.txt"


# --- Atomic file writes -------------------------------------------------------


def _fsync_dir(path):
    """Flush a directory entry change (rename, create) to disk where the OS supports it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open directories; its renames need no directory fsync.
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode(directory=False):
    """Return the mode that open() or mkdir() would give a new file or folder under the umask.

    tempfile creates files with mode 0o600 and folders with 0o700, which would make
    the renamed results unreadable for other users.
    """
    umask = os.umask(0)  # os.umask can only be read by setting it, so it is set back at once.
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_bytes_atomically(path, data):
    """Write `data` to `path` through a temporary file in the same folder.

    The temporary file is flushed with fsync and then renamed over `path` with
    os.replace, so readers see either the old content or the new one. A new file
    gets the usual mode under the umask and an existing file keeps its mode.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _default_file_mode()
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def write_text_atomically(path, text):
    """Write `text` as UTF-8, without newline translation, to `path` atomically.

    See write_bytes_atomically.
    """
    write_bytes_atomically(path, text.encode("utf-8"))


def _json_default(value):
    """Convert NumPy scalars and arrays, which json cannot encode, to Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r}")


def write_json_atomically(path, obj):
    """Write `obj` as indented JSON to `path` atomically (see write_text_atomically)."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"
    write_text_atomically(path, text)


# --- Summary validation ---------------------------------------------------------


def is_int(value):
    """Return whether a value read from JSON is an integer (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value):
    """Return whether a value read from JSON is a number with a finite float value (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        # An int beyond the float range.
        return False


def _is_count(value, minimum):
    return is_int(value) and minimum <= value <= MAX_COUNT


def _summary_problems(summary):
    """Return the problems of a summary dict as messages. An empty list means it is valid."""
    if not isinstance(summary, dict):
        return [f"summary must be a JSON object, got {type(summary).__name__}"]
    missing = [key for key in REQUIRED_SUMMARY_KEYS if key not in summary]
    if missing:
        return [f"missing summary keys: {', '.join(missing)}"]

    problems = []
    # A list or dict cannot be looked up in ARCHITECTURES, so the type is checked first.
    if not isinstance(summary["architecture"], str) or summary["architecture"] not in ARCHITECTURES:
        problems.append(
            f"architecture is {summary['architecture']!r}, expected one of {sorted(ARCHITECTURES)}")
    if not _is_count(summary["k"], 0):
        problems.append(f"k must be a non-negative integer up to {MAX_COUNT}, got {summary['k']!r}")
    for key in ("time_steps", "batch_size", "num_images", "num_batches"):
        if not _is_count(summary[key], 1):
            problems.append(f"{key} must be a positive integer up to {MAX_COUNT}, got {summary[key]!r}")
    for key in ("neuron_count", "ann_operation_count"):
        value = summary.get(key)
        if value is not None and not _is_count(value, 1):
            problems.append(f"{key} must be a positive integer up to {MAX_COUNT} or null, got {value!r}")
    for key in ("ann_accuracy", "numpy_ann_accuracy", "snn_accuracy"):
        value = summary.get(key)
        if value is not None and (not is_finite_number(value) or not 0 <= value <= 1):
            problems.append(f"{key} must be a fraction in [0, 1] or null, got {value!r}")
    if problems:
        return problems

    batch_sizes = summary["batch_sizes"]
    if not isinstance(batch_sizes, (list, tuple)) or not all(is_int(size) for size in batch_sizes):
        return [f"batch_sizes must be a list of integers, got {batch_sizes!r}"]
    if len(batch_sizes) != summary["num_batches"]:
        problems.append(
            f"batch_sizes has {len(batch_sizes)} entries, expected num_batches = {summary['num_batches']}")
    if sum(batch_sizes) != summary["num_images"]:
        problems.append(
            f"batch_sizes add up to {sum(batch_sizes)}, expected num_images = {summary['num_images']}")
    full_batches = batch_sizes[:-1]
    if any(size != summary["batch_size"] for size in full_batches):
        problems.append(
            f"every batch but the last must contain batch_size = {summary['batch_size']} images, "
            f"got batch_sizes {batch_sizes}")
    if batch_sizes and not 1 <= batch_sizes[-1] <= summary["batch_size"]:
        problems.append(
            f"the last batch must contain 1 to batch_size = {summary['batch_size']} images, "
            f"got {batch_sizes[-1]}")
    return problems


# --- Writing ----------------------------------------------------------------------


def _integer_array(name, values, shape):
    """Return `values` as an int64 array of `shape`, or raise ValueError naming the log."""
    array = np.asarray(values)
    if array.shape != shape:
        raise ValueError(
            f"log {name!r} has shape {array.shape}, expected {shape} (num_batches, time_steps)")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"log {name!r} must contain integers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        # Counts accumulated in float arrays are accepted while they are whole numbers.
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"log {name!r} contains values that are not whole numbers")
    return array.astype(np.int64)


def _format_log(array):
    """Return the log text of a (num_batches, time_steps) array: batch-major, one value per line."""
    return "".join(f"{value}\n" for value in array.reshape(-1).tolist())


def _complete_summary(summary, arrays):
    """Return a copy of summary with the optional keys filled in from the architecture and logs."""
    summary = dict(summary)
    architecture = get_architecture(summary["architecture"])
    if summary.get("neuron_count") is None:
        summary["neuron_count"] = architecture.neuron_count()
    if summary.get("ann_operation_count") is None:
        summary["ann_operation_count"] = architecture.ann_operation_count()
    summary.setdefault("ann_accuracy", None)

    final_accuracy = int(arrays["accuracy"][:, -1].sum()) / summary["num_images"]
    if summary.get("snn_accuracy") is None:
        summary["snn_accuracy"] = final_accuracy
    elif abs(summary["snn_accuracy"] - final_accuracy) > 1e-9:
        raise ValueError(
            f"summary snn_accuracy is {summary['snn_accuracy']}, but the accuracy log gives "
            f"{final_accuracy} at the last time step")
    return summary


def write_run_logs(run_dir, logs, summary):
    """Write the four logs and summary.json of one run, replacing the previous run as a set.

    `logs` maps every name in LOG_NAMES to an integer array of shape
    (num_batches, time_steps). The folder name of run_dir must be k<summary["k"]>.
    Missing neuron_count and ann_operation_count are taken from ann2snn.architectures,
    a missing ann_accuracy becomes null and a missing snn_accuracy is computed from
    the accuracy log. Other summary keys are written unchanged.

    Everything is written into a new temporary sibling folder, which then takes the
    place of run_dir. An interruption leaves run_dir with the previous complete logs or
    without logs, and never with a mix. A leftover "k<k>.tmp-*" or "k<k>.old-*" folder
    can be deleted.

    Raises ValueError when the summary or a log is invalid, before anything is written.
    """
    run_dir = Path(run_dir)
    problems = _summary_problems(summary)
    if problems:
        raise ValueError(f"invalid summary for {run_dir}: " + "; ".join(problems))
    expected_name = run_dir_name(summary["k"])
    if run_dir.name != expected_name:
        raise ValueError(
            f"run directory {run_dir} does not match k = {summary['k']}: "
            f"its name must be {expected_name!r}")
    unknown = sorted(set(logs) - set(LOG_NAMES))
    missing = [name for name in LOG_NAMES if name not in logs]
    if missing or unknown:
        raise ValueError(
            f"logs must contain exactly {', '.join(LOG_NAMES)} "
            f"(missing: {missing or 'none'}, unknown: {unknown or 'none'})")

    shape = (summary["num_batches"], summary["time_steps"])
    arrays = {name: _integer_array(name, logs[name], shape) for name in LOG_NAMES}
    summary = _complete_summary(summary, arrays)

    parent = run_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f"{run_dir.name}.tmp-{os.getpid()}-", dir=parent))
    try:
        os.chmod(temp_dir, _default_file_mode(directory=True))
        for name in LOG_NAMES:
            write_text_atomically(log_path(temp_dir, name), _format_log(arrays[name]))
        write_json_atomically(temp_dir / SUMMARY_NAME, summary)
        _replace_dir(temp_dir, run_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


def _replace_dir(new_dir, run_dir):
    """Move new_dir to run_dir. An existing run_dir is renamed aside first and then deleted."""
    aside_dir = None
    if os.path.lexists(run_dir):
        aside_dir = Path(tempfile.mkdtemp(prefix=f"{run_dir.name}.old-{os.getpid()}-", dir=run_dir.parent))
        # mkdtemp only reserves a unique name. os.rename can replace an empty folder on POSIX
        # but not on Windows, so the reserved folder is removed first.
        os.rmdir(aside_dir)
        os.rename(run_dir, aside_dir)
    try:
        os.rename(new_dir, run_dir)
    except BaseException:
        if aside_dir is not None:
            os.rename(aside_dir, run_dir)
        raise
    _fsync_dir(run_dir.parent)
    if aside_dir is not None:
        try:
            shutil.rmtree(aside_dir)
        except OSError as error:
            # The new logs are in place already, so a leftover copy of the old run is no failure.
            logger.warning("could not delete the previous logs in %s (%s). Delete the folder by hand",
                           aside_dir, error)


# --- Reading ----------------------------------------------------------------------


def _read_text(path):
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise LogError(f"{path}: not UTF-8 text ({error})") from None
    except OSError as error:
        raise LogError(f"{path}: cannot be read ({error.strerror or error})") from None


def _read_json(path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise LogError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None


def read_log(path, num_batches, time_steps):
    """Parse one log file into an int64 array of shape (num_batches, time_steps).

    Raises LogError naming the file when its line count differs from
    num_batches x time_steps or when a line (1-based number in the message) is not
    an integer. Surrounding spaces are ignored.
    """
    lines = _read_text(path).splitlines()
    expected = num_batches * time_steps
    if len(lines) != expected:
        raise LogError(
            f"{path}: {len(lines)} lines, expected {expected} "
            f"({num_batches} batches x {time_steps} time steps)")
    values = []
    for line_number, line in enumerate(lines, start=1):
        text = line.strip()
        if not _INTEGER_LINE.match(text):
            raise LogError(f"{path}: line {line_number} is {line!r}, expected an integer")
        values.append(int(text))
    try:
        array = np.array(values, dtype=np.int64)
    except OverflowError:
        raise LogError(f"{path}: a value does not fit into a 64-bit integer") from None
    return array.reshape(num_batches, time_steps)


def _check_column_sums(path, array):
    """Raise LogError when a time step's values, summed over the batches, overflow int64.

    The figures sum every log over the batches with NumPy, where an overflow wraps
    around silently instead of failing.
    """
    limit = np.iinfo(np.int64).max
    num_batches = array.shape[0]
    # The bound max|value| * num_batches skips the exact sum for most logs. The extremes are
    # converted to Python int first, because negating the minimum int64 in NumPy overflows.
    largest = max(int(array.max()), -int(array.min())) if array.size else 0
    if largest * num_batches <= limit:
        return
    sums = array.astype(object).sum(axis=0)
    for step, total in enumerate(sums.tolist(), start=1):
        if not -limit - 1 <= total <= limit:
            raise LogError(
                f"{path}: the values of time step {step} add up to {total} over the "
                f"{num_batches} batches, which does not fit into a 64-bit integer. Run the "
                f"spiking simulation of this k again to rewrite the log")


def read_run_logs(run_dir):
    """Read and validate the summary and the four logs of a run directory.

    Raises LogError naming the file when summary.json is missing or invalid, when its
    k differs from the folder name, when a log cannot be parsed (see read_log), or
    when a log's sum over the batches at some time step overflows int64.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY_NAME
    summary = _read_json(summary_path)
    problems = _summary_problems(summary)
    if problems:
        raise LogError(f"{summary_path}: " + "; ".join(problems))
    match = RUN_DIR_PATTERN.match(run_dir.name)
    if match and int(match.group(1)) != summary["k"]:
        raise LogError(
            f"{summary_path}: k is {summary['k']}, but the folder is named {run_dir.name!r}")

    arrays = {
        name: read_log(log_path(run_dir, name), summary["num_batches"], summary["time_steps"])
        for name in LOG_NAMES
    }
    for name, array in arrays.items():
        _check_column_sums(log_path(run_dir, name), array)
    return RunLogs(path=run_dir, summary=summary, **arrays)


def find_runs(figs_dir):
    """Return {k: run_dir} for every folder figs_dir/k<integer>, sorted by k.

    Other entries, such as the "k1.tmp-*" and "k1.old-*" folders of an unfinished
    write_run_logs, are ignored. A missing figs_dir gives {}. Raises LogError when
    figs_dir cannot be listed, e.g. without read permission.
    """
    figs_dir = Path(figs_dir)
    if not figs_dir.is_dir():
        return {}
    try:
        entries = list(figs_dir.iterdir())
    except OSError as error:
        raise LogError(
            f"{figs_dir}: the folder cannot be listed ({error.strerror or error}). "
            f"Give read permission on it (chmod u+r {figs_dir}) or use another folder") from None
    runs = {}
    for entry in entries:
        match = RUN_DIR_PATTERN.match(entry.name)
        if match and entry.is_dir():
            k = int(match.group(1))
            if k in runs:
                # "k1" and "k01" name the same k, so one of them would hide the other.
                raise LogError(f"{figs_dir}: folders {runs[k].name!r} and {entry.name!r} both contain k = {k}")
            runs[k] = entry
        elif entry.name.startswith("k") and (".tmp-" in entry.name or ".old-" in entry.name):
            logger.info("ignoring %s: unfinished write of a run (delete it if no run is in progress)", entry)
    return dict(sorted(runs.items()))


def check_run_logs(run):
    """Return a list of messages about values in `run` that break the log definitions.

    Checks: 0 <= accuracy <= batch size; spike_num and sop_num non-negative and
    non-decreasing over the time steps; |spike_collect| <= spike_num; spike_num and
    spike_collect of equal parity, because (spike_num + spike_collect) / 2 counts
    positive spikes. Each message names the file and the broken definition, then the
    first line that breaks it with its batch, time step and value, and the number of
    such lines. An empty list means every check passed.
    """
    def message(definition, mask, describe_value):
        # np.nonzero lists the entries in file order: batch by batch, step by step.
        batches, steps = np.nonzero(mask)
        batch, step = int(batches[0]), int(steps[0])
        line = batch * mask.shape[1] + step + 1
        total = "1 line" if len(batches) == 1 else f"{len(batches)} lines"
        return (f"{definition}, first at line {line} (batch {batch + 1}, time step {step + 1}): "
                f"{describe_value(batch, step)} ({total} in total)")

    problems = []
    batch_sizes = np.asarray(run.batch_sizes)[:, None]
    accuracy = run.accuracy
    wrong_accuracy = (accuracy < 0) | (accuracy > batch_sizes)
    if np.any(wrong_accuracy):
        problems.append(message(
            "accuracy.txt: a value is negative or larger than its batch size", wrong_accuracy,
            lambda batch, step: f"{accuracy[batch, step]} in a batch of {batch_sizes[batch, 0]} images"))

    for name in ("spike_num", "sop_num"):
        array = getattr(run, name)
        negative = array < 0
        if np.any(negative):
            problems.append(message(
                f"{name}.txt: a value is negative", negative,
                lambda batch, step, array=array: f"{array[batch, step]}"))
        # Neighbors are compared instead of subtracted, because the difference of two
        # int64 values can overflow.
        decreasing = np.zeros(array.shape, dtype=bool)
        decreasing[:, 1:] = array[:, 1:] < array[:, :-1]
        if np.any(decreasing):
            problems.append(message(
                f"{name}.txt: a cumulative count decreases between time steps", decreasing,
                lambda batch, step, array=array: f"{array[batch, step]} after {array[batch, step - 1]}"))

    spike_num = run.spike_num
    spike_collect = run.spike_collect
    # np.abs(spike_collect) would overflow for the most negative int64. Negating
    # spike_num cannot overflow where it is non-negative, and a negative spike_num is
    # reported above.
    too_many_net = (spike_collect > spike_num) | (spike_collect < -spike_num)
    if np.any(too_many_net):
        problems.append(message(
            "spike_collect.txt: |net spikes| exceeds the spike count of spike_num.txt", too_many_net,
            lambda batch, step: (f"net spikes {spike_collect[batch, step]}, "
                                 f"spike_num {spike_num[batch, step]}")))
    # A sum that overflows wraps modulo 2**64, which keeps its parity.
    odd_sum = (spike_num + spike_collect) % 2 != 0
    if np.any(odd_sum):
        problems.append(message(
            "spike_num.txt and spike_collect.txt: a pair of values has odd sum, "
            "so the positive spike count is not a whole number", odd_sum,
            lambda batch, step: f"{spike_num[batch, step]} and {spike_collect[batch, step]}"))
    return problems


# --- Architecture of a figs folder -------------------------------------------------------


def _run_folder_names(figs_dir, k):
    """Return the sorted names of the run folders k<integer> in figs_dir, plus k<k> if k is given."""
    names = set()
    try:
        names.update(entry.name for entry in Path(figs_dir).iterdir()
                     if RUN_DIR_PATTERN.match(entry.name))
    except OSError:
        # A missing folder has no runs. A folder without read permission can still be
        # written to, so its run folder k<k> is looked up by name below.
        pass
    if k is not None:
        names.add(run_dir_name(k))
    return sorted(names)


def _recorded_architecture(value):
    """Return `value` when it is the name of a known architecture, else None."""
    return value if isinstance(value, str) and value in ARCHITECTURES else None


def find_other_architecture(figs_dir, architecture, k=None):
    """Return (architecture, source) of the first result in figs_dir of another architecture, or None.

    Reads the "architecture" of every k<integer>/summary.json and of every entry of
    ann_accuracy.json. The source names the file, or the file and entry, that
    differs. Files that are missing, unreadable or invalid, and values that
    name no known architecture, are skipped. `k` adds the run folder k<k>, which
    is then read even if figs_dir cannot be listed.

    NOTE: entries without "architecture", as record_ann_accuracy wrote them before
    that key existed, are not checked, so a folder with only such entries passes.
    """
    figs_dir = Path(figs_dir)
    for name in _run_folder_names(figs_dir, k):
        summary_path = figs_dir / name / SUMMARY_NAME
        try:
            summary = _read_json(summary_path)
        except LogError:
            continue
        found = _recorded_architecture(summary.get("architecture")) if isinstance(summary, dict) else None
        if found is not None and found != architecture:
            return found, str(summary_path)

    try:
        entries = read_ann_accuracy(figs_dir)
    except LogError:
        return None
    for key, entry in entries.items():
        found = _recorded_architecture(entry.get("architecture")) if isinstance(entry, dict) else None
        if found is not None and found != architecture:
            return found, f"{figs_dir / ANN_ACCURACY_NAME} entry {key!r}"
    return None


def check_figs_architecture(figs_dir, architecture, k=None, option="--figs_dir"):
    """Raise UsageError when figs_dir contains results of another architecture.

    A script of `architecture` calls it before it writes into figs_dir, because its
    run folders or ann_accuracy.json entries would replace or mix with the other
    network's results. See find_other_architecture for the files it reads and for `k`.
    """
    found = find_other_architecture(figs_dir, architecture, k)
    if found is None:
        return
    other, source = found
    raise UsageError(
        f"{option} {figs_dir} contains {other} results ({source} names architecture {other!r}), "
        f"but this script writes {architecture} results, which would replace or mix with them. "
        f"Pass {option} with a folder for {architecture} results, such as figs/ next to the "
        f"{architecture} scripts.")


# --- Training results ----------------------------------------------------------------


class _DirectoryLock:
    """An exclusive flock on a directory, which serializes writers of its JSON files.

    NOTE: this lock works only on POSIX systems. Elsewhere concurrent writers of
    the same file can lose an update, although the file itself stays valid.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            os.close(self.fd)  # Closing the descriptor releases the lock.
            self.fd = None


def read_ann_accuracy(figs_dir):
    """Return the content of figs_dir/ann_accuracy.json, or {} when the file does not exist.

    Raises LogError when the file is not a JSON object.
    """
    path = Path(figs_dir) / ANN_ACCURACY_NAME
    if not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise LogError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def record_ann_accuracy(figs_dir, key, info):
    """Store `info` under `key` ("fp32", "k0", ...) in figs_dir/ann_accuracy.json.

    The entry of `key` is replaced and other entries are kept. `info` must contain
    "accuracy", a fraction in [0, 1], and may contain "architecture", the name of the
    trained network. The file is rewritten atomically while holding a lock on
    figs_dir, so that training runs can record results at the same time.
    Raises LogError, and leaves the file unchanged, when the existing file is invalid.
    With "architecture" in `info`, raises UsageError (see check_figs_architecture),
    and leaves the file unchanged, when figs_dir contains another architecture's results.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string such as 'fp32' or 'k1', got {key!r}")
    if not isinstance(info, dict):
        raise ValueError(f"info must be a dict, got {type(info).__name__}")
    accuracy = info.get("accuracy")
    if not is_finite_number(accuracy) or not 0 <= accuracy <= 1:
        raise ValueError(f"info['accuracy'] must be a fraction in [0, 1], got {accuracy!r}")
    architecture = info.get("architecture")
    if architecture is not None and _recorded_architecture(architecture) is None:
        raise ValueError(
            f"info['architecture'] must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")

    figs_dir = Path(figs_dir)
    figs_dir.mkdir(parents=True, exist_ok=True)
    with _DirectoryLock(figs_dir):
        data = read_ann_accuracy(figs_dir)
        if architecture is not None:
            check_figs_architecture(figs_dir, architecture)
        data[key] = info
        write_json_atomically(figs_dir / ANN_ACCURACY_NAME, data)


def copy_ann_accuracy(source_dir, target_dir):
    """Copy source_dir/ann_accuracy.json into target_dir, keeping its model paths valid.

    Each entry's "model" is a path relative to the file's folder, so a plain copy
    into another folder would point elsewhere. Relative paths are rewritten
    relative to target_dir, and absolute paths are kept. Returns the copied data.
    """
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    data = read_ann_accuracy(source_dir)
    for entry in data.values():
        model = entry.get("model") if isinstance(entry, dict) else None
        if isinstance(model, str) and not os.path.isabs(model):
            entry["model"] = os.path.relpath(os.path.abspath(source_dir / model), os.path.abspath(target_dir))
    target_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(target_dir / ANN_ACCURACY_NAME, data)
    return data
