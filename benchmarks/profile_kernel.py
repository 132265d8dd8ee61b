"""Profile the events kernel with Linux perf, with the names of Numba's compiled functions.

    python benchmarks/profile_kernel.py --model_dir DIR [--k 1] [--num_images 3000]
        [--seconds 5] [--data_dir ./data] [--output kernel.perf]

perf cannot name code that Numba compiles at run time. This script compiles the
kernels into a fresh cache folder, writes /tmp/perf-<pid>.map with the address
of every compiled function (perf reads such maps for code without a file), then
simulates --num_images test images with `perf record` attached to this process
for --seconds, and prints `perf report` sorted by function. The map stays in
/tmp, so that `perf report -i OUTPUT` or `perf script` can name the functions
later. Its sizes run from one function to the next, so a few hundred bytes of
padding may count for the function before. Needs `perf` on the PATH and permission to profile
(root, or kernel.perf_event_paranoid <= 1).
"""

import argparse
import atexit
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


def write_perf_map(functions):
    """Write /tmp/perf-<pid>.map for `functions` and return its path."""
    path = f"/tmp/perf-{os.getpid()}.map"
    with open(path, "w") as stream:
        for index, (address, name) in enumerate(functions):
            following = functions[index + 1][0] if index + 1 < len(functions) else address + LAST_SIZE
            stream.write(f"{address:x} {following - address:x} {name}\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_options(parser, 3000, "first test images, simulated while perf records")
    parser.add_argument("--seconds", type=cli.positive_float, default=5.0,
                        help="seconds that perf records, from the start of the simulation (default: 5)")
    parser.add_argument("--output", default="kernel.perf", help="perf data file (default: kernel.perf)")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        parser.error("perf not found: install it (Debian: apt-get install linux-perf)")

    model, images, labels = load_model_and_images(args)
    print("compiling the kernels into a fresh cache folder", flush=True)
    simulate(model, images[:50], labels[:50], 20, 50, progress=False, compare_with_ann=False)
    map_path = write_perf_map(compiled_functions())
    print(f"wrote {map_path}", flush=True)

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
    print("\n".join(line[:120] for line in lines[:15]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
