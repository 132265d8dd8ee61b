"""Profile the events kernel with Linux perf, with the names of Numba's compiled functions.

    python benchmarks/profile_kernel.py --model_dir DIR [--k 1] [--num_images 3000]
        [--seconds 5] [--data_dir ./data] [--output kernel.perf] [--keep_map]

perf cannot name code that Numba compiles at run time. This script compiles the
kernels into a fresh cache folder, writes /tmp/perf-<pid>.map with the address
of every compiled function (perf reads such maps for code without a file), then
simulates --num_images test images with `perf record` attached to this process
for --seconds, and prints `perf report` sorted by function. The map's sizes run
from one function to the next, so a few hundred bytes of padding may count for
the function before. The script removes the map when it ends, also after
Ctrl+C, but not when a signal such as SIGTERM kills it. With --keep_map the map
stays in /tmp, so that `perf report -i OUTPUT` or `perf script` can name the
functions later. Needs `perf` on the PATH and permission to profile (root, or
kernel.perf_event_paranoid <= 1).

Exits with 1 if perf fails or records no samples, for example when the
simulation ends before perf starts to record. Exits with 2 for invalid options,
a missing perf, or a map of this process id that already exists.
"""

import argparse
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

# Numba reads its cache folder when it is imported. A fresh one makes it compile,
# which keeps the LLVM modules whose function addresses go into the map.
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="profile_kernel-")
# The folder is removed at exit. Numba registers its exit handlers later, so they run
# first and cannot leave an empty cache folder behind.
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)

from model_options import add_model_options, load_model_and_images  # noqa: E402

from ann2snn import cli, event_kernels  # noqa: E402
from ann2snn.simulation import simulate  # noqa: E402

KERNELS = (event_kernels.simulate_images, event_kernels._hidden_layer, event_kernels._deliver,
           event_kernels._update_neurons, event_kernels._first_layer_spikes,
           event_kernels._first_layer_targets, event_kernels._room)
# Size given to the last function of the map, which has no next one.
LAST_SIZE = 0x10000


def compiled_functions():
    """Return sorted (address, name) of every function that Numba compiled for KERNELS."""
    # NOTE: reads Numba's private _final_module and _linking_libraries, checked with
    # Numba 0.68.1 only; another version may rename them.
    found = set()
    for kernel in KERNELS:
        for result in kernel.overloads.values():
            for library in [result.library] + list(getattr(result.library, "_linking_libraries", [])):
                for function in library._final_module.functions:
                    if function.is_declaration:
                        continue
                    address = library.get_pointer_to_function(function.name)
                    if address:
                        found.add((address, function.name))
    return sorted(found)


def write_perf_map(path, functions):
    """Write the perf map `path` for `functions`, a list of (address, name) sorted by address.

    Raises FileExistsError if `path` exists, so that no other map is overwritten.
    """
    with open(path, "x") as stream:
        for index, (address, name) in enumerate(functions):
            following = functions[index + 1][0] if index + 1 < len(functions) else address + LAST_SIZE
            stream.write(f"{address:x} {following - address:x} {name}\n")


def existing_map_message(path):
    return (f"{path} already exists, probably left by an earlier process with this process id "
            f"(an earlier run with --keep_map, or another JIT compiler), and perf would read it "
            f"for this process. Move it away if you still need it, else delete it, or run the "
            f"script again, which gets another process id.")


def record_and_report(args, model, images, labels):
    """Simulate `images` while perf records this process, then print perf's report.

    Returns the exit code: 0 on success, or 1 if perf failed or recorded no samples.
    """
    recorder = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(os.getpid()),
                                 "-o", args.output, "--", "sleep", str(args.seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    simulate(model, images, labels, 20, 50, progress=False, compare_with_ann=False)
    _, perf_errors = recorder.communicate()
    if recorder.returncode != 0:
        # perf's own message gives the reason, e.g. a missing permission or an unwritable --output.
        print(f"error: perf record failed with exit code {recorder.returncode}:\n"
              f"{perf_errors.strip()}", file=sys.stderr)
        return 1
    report = subprocess.run(["perf", "report", "-i", args.output, "--no-children", "--sort", "sym",
                             "--stdio"], capture_output=True, text=True)
    lines = [line for line in report.stdout.splitlines() if line.strip() and not line.startswith("#")]
    perf_message = " ".join(report.stderr.split()) or "no output"
    if report.returncode != 0:
        print(f"error: perf report -i {args.output} failed with exit code {report.returncode}: "
              f"{perf_message}", file=sys.stderr)
        return 1
    if not lines:
        # For a recording without samples, perf report exits with 0 and prints only its header.
        print(f"error: perf recorded no samples of this process in {args.output} (perf report: "
              f"{perf_message}). Probably the simulation of {len(images)} test "
              f"image{'' if len(images) == 1 else 's'} ended before perf started to record: "
              f"pass more --num_images. If that does not help, check that perf record -p PID "
              f"can sample a running process here.", file=sys.stderr)
        return 1
    print("\n".join(line[:120] for line in lines[:15]))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 3000, "first test images, simulated while perf records")
    parser.add_argument("--seconds", type=cli.positive_float, default=5.0,
                        help="recording time of perf in seconds, from the start of the simulation "
                             "(default: 5)")
    parser.add_argument("--output", type=cli.nonempty_path, default="kernel.perf",
                        help="perf data file to write (default: kernel.perf)")
    parser.add_argument("--keep_map", action="store_true",
                        help="keep /tmp/perf-<pid>.map after the run, for a later perf report -i "
                             "OUTPUT (default: remove it at exit)")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        parser.error("perf not found: install it (Debian: apt-get install linux-perf)")
    # perf finds the map of a process by this file name.
    map_path = f"/tmp/perf-{os.getpid()}.map"
    if os.path.exists(map_path):
        parser.error(existing_map_message(map_path))

    model, images, labels = load_model_and_images(args)
    print("compiling the kernels into a fresh cache folder", flush=True)
    simulate(model, images[:50], labels[:50], 20, 50, progress=False, compare_with_ann=False)
    try:
        write_perf_map(map_path, compiled_functions())
    except FileExistsError:
        # The map was created after the check above. Exit with 2, as that check does.
        print(f"error: {existing_map_message(map_path)}", file=sys.stderr)
        return 2
    print(f"wrote {map_path}" + ("" if args.keep_map else "; it is removed at exit"), flush=True)
    try:
        return record_and_report(args, model, images, labels)
    finally:
        # perf report reads the map, so the map is removed only after the report.
        if not args.keep_map:
            with contextlib.suppress(FileNotFoundError):
                os.remove(map_path)


if __name__ == "__main__":
    sys.exit(main())
