"""Time the project's spiking simulator against the plain reference and check that their logs agree.

    python benchmarks/benchmark_simulation.py --model_dir DIR [--arch LeNet] [--k 1]
        [--time_steps 20] [--batch_size 50] [--num_images 10000] [--data_dir ./data] [--profile]

Each simulator runs in its own subprocess, one after the other, on the same
model and test images, so that each peak memory (VmHWM) belongs to one
simulator. The wall and CPU times cover the simulation only, not the start of
Python, the data loading or the model loading. Each subprocess first simulates
one batch untimed, because the project's first call compiles its Numba kernels
(tens of seconds) or loads them from Numba's cache. That time is printed
separately, and on Linux the peak memory is reset to the resident memory after
it. Memory that compiling left resident still counts: run twice for the figure
with the kernels loaded from the cache. The script prints the machine, both times, their ratios
(reference / project), both peak memories, and whether the four logs
(accuracy, spike_num, spike_collect, sop_num) are identical.
`--profile` then runs the project simulator once more under cProfile and prints
the functions with the largest cumulative and internal times.

Exit codes: 0 if the logs are identical, 1 if they differ, 2 for invalid
options, a model file or test set that does not load, or a simulator
subprocess that fails. The model and the test set are checked before the
first subprocess starts.
"""

import argparse
import cProfile
import os
import pstats
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
import threadpoolctl

BENCHMARK_DIR = os.path.dirname(os.path.abspath(__file__))
try:
    import ann2snn  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, os.path.dirname(BENCHMARK_DIR))

from ann2snn import cli  # noqa: E402
from ann2snn.architectures import ARCHITECTURES, get_architecture  # noqa: E402
from ann2snn.data import TEST_SIZE, DataError, load_test_set  # noqa: E402
from ann2snn.model_file import MODEL_FILE_NAME, ModelFileError, load_model  # noqa: E402
from ann2snn.simulation import simulate  # noqa: E402
from model_options import time_step_count  # noqa: E402
from reference_simulator import LOG_NAMES, simulate_reference  # noqa: E402

SIMULATORS = ("project", "reference")
# Functions that --profile prints, per sort order.
PROFILE_ENTRIES = 25
MIB = 1024 * 1024


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 identical logs, 1 different logs, 2 invalid options or a failed run.")

    parser.add_argument("--model_dir", type=cli.nonempty_path, required=True,
                        help=f"folder that contains {MODEL_FILE_NAME}")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="LeNet",
                        help="architecture of the model (default: LeNet)")
    parser.add_argument("--k", type=cli.quantization_level, default=1,
                        help="quantization level of the model (integer, default: 1)")
    parser.add_argument("--time_steps", type=time_step_count, default=20,
                        help="time steps simulated per image (default: 20)")
    parser.add_argument("--batch_size", type=cli.positive_int, default=50,
                        help="images simulated together (default: 50)")
    parser.add_argument("--num_images", type=cli.positive_int, default=TEST_SIZE,
                        help=f"simulate the first N test images (default: all {TEST_SIZE})")
    parser.add_argument("--data_dir", type=cli.nonempty_path, default="./data",
                        help="folder with Fashion-MNIST, as for the Spiking_ scripts "
                             "(default: ./data)")
    parser.add_argument("--allow_pickle", action="store_true",
                        help="accept a model file in the pickled layout of the paper's original "
                             "scripts; only for files you trust")
    parser.add_argument("--profile", action="store_true",
                        help="also run the project simulator under cProfile and print the "
                             f"top {PROFILE_ENTRIES} functions by cumulative and by internal time")

    # Set by the parent process when it starts a simulator subprocess.
    parser.add_argument("--worker", choices=SIMULATORS + ("profile",), help=argparse.SUPPRESS)
    parser.add_argument("--result_file", help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.num_images > TEST_SIZE:
        parser.error(f"--num_images {args.num_images} is larger than the test set "
                     f"({TEST_SIZE} images): use at most {TEST_SIZE}")
    return args


def load_inputs(args):
    """Return (model, images, labels) as the options select them. Raises ModelFileError."""
    path = os.path.join(args.model_dir, MODEL_FILE_NAME)
    model = load_model(path, arch=get_architecture(args.arch), k=args.k,
                       allow_pickle=args.allow_pickle)
    if model.k == "unknown":
        # The pickled layout stores no k, so the requested one is trusted.
        model.metadata["k"] = args.k
    images, labels = load_test_set(args.data_dir)
    return model, images[:args.num_images], labels[:args.num_images]


def peak_memory_bytes():
    """Return this process's peak resident memory so far (VmHWM on Linux, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def reset_peak_memory():
    """Reset VmHWM to the current resident memory (Linux); elsewhere the peak keeps counting."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def run_simulator(name, model, images, labels, args):
    """Run simulator `name` and return its logs: a dict of int64 arrays (num_batches, time_steps)."""
    if name == "project":
        # The reference runs no NumPy ANN, so the project's comparison with it is off too.
        return simulate(model, images, labels, args.time_steps, args.batch_size,
                        progress=False, compare_with_ann=False).logs
    return simulate_reference(model, images, labels, args.time_steps, args.batch_size)


def run_worker(args):
    """Run one simulator in this subprocess and return its exit code.

    A model, data or memory error is printed as one line, with exit code 1. The
    parent checked the model and the data before, so such an error means that the
    files changed in between, or that memory ran out.
    """
    try:
        return simulate_in_worker(args)
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
    except MemoryError as error:
        print(f"error: not enough memory to simulate {args.num_images} images for --time_steps "
              f"{args.time_steps} with --batch_size {args.batch_size} ({error}). Use fewer "
              f"--time_steps, a smaller --batch_size or fewer --num_images.", file=sys.stderr)
    return 1


def simulate_in_worker(args):
    """Run the simulator that --worker names and write its logs, times and memory to --result_file.

    The profile worker prints cProfile's statistics instead.
    """
    model, images, labels = load_inputs(args)

    if args.worker == "profile":
        profiler = cProfile.Profile()
        profiler.enable()
        run_simulator("project", model, images, labels, args)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        for order, label in (("cumulative", "cumulative time"),
                             ("tottime", "internal time (excluding callees)")):
            print(f"\nproject simulator under cProfile, top {PROFILE_ENTRIES} by {label}:")
            stats.sort_stats(order).print_stats(PROFILE_ENTRIES)
        return 0

    # The project's first call compiles its Numba kernels or loads them from the cache.
    # That one-off cost is not simulation speed, so one batch runs untimed first.
    warm_start = time.perf_counter()
    run_simulator(args.worker, model, images[:args.batch_size], labels[:args.batch_size], args)
    warm_seconds = time.perf_counter() - warm_start
    reset_peak_memory()

    memory_before = peak_memory_bytes()
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    logs = run_simulator(args.worker, model, images, labels, args)
    cpu_seconds = time.process_time() - cpu_start
    wall_seconds = time.perf_counter() - wall_start
    np.savez(args.result_file, wall_seconds=wall_seconds, cpu_seconds=cpu_seconds,
             warm_seconds=warm_seconds,
             peak_bytes=peak_memory_bytes(), peak_bytes_before=memory_before,
             **{f"log_{name}": np.asarray(logs[name]) for name in LOG_NAMES})
    return 0


def worker_command(args, worker, result_file=None):
    """Return the command line that runs this script as a `worker` subprocess with the same options."""
    command = [sys.executable, os.path.abspath(__file__),
               "--model_dir", args.model_dir, "--arch", args.arch, "--k", str(args.k),
               "--time_steps", str(args.time_steps), "--batch_size", str(args.batch_size),
               "--num_images", str(args.num_images), "--data_dir", args.data_dir,
               "--worker", worker]
    if args.allow_pickle:
        command.append("--allow_pickle")
    if result_file is not None:
        command += ["--result_file", result_file]
    return command


def start_worker(args, worker, result_file=None):
    """Run a worker subprocess, with this process's output streams; return True if it succeeded."""
    completed = subprocess.run(worker_command(args, worker, result_file))
    if completed.returncode != 0:
        print(f"error: the {worker} simulator subprocess failed with exit code "
              f"{completed.returncode}; its error output is above.", file=sys.stderr)
        return False
    return True


def describe_machine():
    """Return lines naming the cores, NumPy and the BLAS libraries that NumPy loaded."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"machine: {os.cpu_count()} cores, {usable} usable by this process; "
             f"Python {sys.version.split()[0]}; NumPy {np.__version__}"]
    libraries = threadpoolctl.threadpool_info()
    if not libraries:
        lines.append("BLAS: none found by threadpoolctl")
    for library in libraries:
        kind = "BLAS" if library.get("user_api") == "blas" else library.get("user_api", "?")
        lines.append(
            f"{kind}: {library.get('internal_api', '?')} "
            f"{library.get('version', '?')}, {library.get('num_threads', '?')} threads, "
            f"architecture {library.get('architecture', '?')}, {library.get('filepath', '?')}")
    return lines


def compare_logs(project, reference):
    """Return a line for every log that differs between the two simulators (empty if none)."""
    problems = []
    for name in LOG_NAMES:
        project_log = project[f"log_{name}"]
        reference_log = reference[f"log_{name}"]
        if project_log.shape != reference_log.shape:
            problems.append(f"{name}: shape {project_log.shape} (project) != "
                            f"{reference_log.shape} (reference)")
            continue
        differ = np.argwhere(project_log != reference_log)
        if len(differ):
            batch, step = differ[0]
            problems.append(
                f"{name}: {len(differ)} of {project_log.size} entries differ, the first at "
                f"batch {batch}, time step {step}: {project_log[batch, step]} (project) != "
                f"{reference_log[batch, step]} (reference)")
    return problems


def report_simulator(name, result):
    print(f"{name + ':':<11} wall {float(result['wall_seconds']):8.2f} s, "
          f"CPU {float(result['cpu_seconds']):8.2f} s, "
          f"peak memory {int(result['peak_bytes']) / MIB:7.1f} MiB "
          f"({int(result['peak_bytes_before']) / MIB:.1f} MiB before simulating); "
          f"first batch, untimed: {float(result['warm_seconds']):.2f} s")


def report_activity(result, num_images):
    """Print accuracy and activity per image from a simulator's logs, which explain its run time."""
    final = {name: int(result[f"log_{name}"][:, -1].sum()) for name in LOG_NAMES}
    print(f"SNN accuracy {100 * final['accuracy'] / num_images:.2f}% after the last step; "
          f"per image: {final['spike_num'] / num_images:.0f} spikes "
          f"({final['spike_collect'] / num_images:.0f} net), "
          f"{final['sop_num'] / num_images:.0f} SOPs")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)

    print("command:", shlex.join([sys.executable] + sys.argv))
    for line in describe_machine():
        print(line)
    try:
        # Load as the workers do, so that an invalid model or test set is reported
        # once, before the first simulation starts.
        model, _, _ = load_inputs(args)
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {model.path} ({args.arch}, k={args.k}); {args.num_images} images, "
          f"{args.time_steps} time steps, batch size {args.batch_size}")
    sys.stdout.flush()

    results = {}
    with tempfile.TemporaryDirectory(prefix="benchmark_simulation-") as folder:
        for name in SIMULATORS:
            result_file = os.path.join(folder, f"{name}.npz")
            if not start_worker(args, name, result_file):
                return 2
            with np.load(result_file) as archive:
                results[name] = {key: archive[key] for key in archive.files}

    for name in SIMULATORS:
        report_simulator(name, results[name])
    for clock in ("wall", "CPU"):
        key = f"{clock.lower()}_seconds"
        ratio = float(results["reference"][key]) / float(results["project"][key])
        print(f"ratio reference / project ({clock} time): {ratio:.2f}")
    report_activity(results["project"], args.num_images)

    problems = compare_logs(results["project"], results["reference"])
    if problems:
        print("logs differ:")
        for problem in problems:
            print("  " + problem)
    else:
        print(f"logs identical: {', '.join(LOG_NAMES)}")
    sys.stdout.flush()

    if args.profile and not start_worker(args, "profile"):
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
