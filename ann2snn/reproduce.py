"""Reproduce the paper's Fashion-MNIST experiments: train, convert, simulate, plot.

    python -m ann2snn.reproduce [--only MLP] [--keys k0 k1] [--skip_spiking]

Runs the project's own scripts with the paper's defaults (Adam 1e-4, batch 200,
100 epochs for LeNet, 150 for MLP), one model at a time, MLP first because it
trains in minutes. Each model lives in pretrained/<arch>/<key>/ with its
training log; pretrained/manifest.json records architecture, k, epochs, seed,
test accuracy, SHA-256 and command of every finished model.

Interrupted runs resume: a model whose npz records all epochs on the full test
set is skipped, and one with a checkpoint continues from its last finished epoch.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

from .cli import MAX_SEED, nonempty_path, seed_value
from .logs import write_json_atomically

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_DIR = os.path.join(REPO_ROOT, "pretrained")
MANIFEST = os.path.join(PRETRAINED_DIR, "manifest.json")
EPOCHS = {"MLP": 150, "LeNet": 100}
KEYS = ("k0", "k1", "k2", "fp32")
FULL_TEST_SET = 10000
# Time steps of the Spiking runs; doubled until every neuron has settled.
INITIAL_TIME_STEPS = 40
MAX_TIME_STEPS = 320


def model_dir(arch, key):
    return os.path.join(PRETRAINED_DIR, arch, key)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(path):
    """Return the metadata of the npz at `path`, or None if there is no readable one."""
    from .model_file import ModelFileError, load_model

    try:
        return load_model(path).metadata
    except ModelFileError:
        return None


def is_finished(arch, key, epochs):
    """Return whether the model of `arch` and `key` exists and is finished.

    A finished model was trained for `epochs` epochs and tested on the full test set.
    Exits with a message when the file exists but cannot be read, because training again
    would replace it and take far longer than restoring a shipped model with git.
    """
    from .model_file import ModelFileError, load_model

    path = os.path.join(model_dir(arch, key), "model_fashion_mnist.npz")
    if not os.path.exists(path):
        return False
    try:
        metadata = load_model(path).metadata
    except ModelFileError as error:
        raise SystemExit(
            f"error: {error}\nThis script trains a model only where none exists. Restore the file "
            f"(git -C {REPO_ROOT} checkout -- {os.path.relpath(path, REPO_ROOT)} for a shipped "
            f"model) or delete it to train it again.") from None
    return (metadata.get("epochs") == epochs
            and metadata.get("num_test_images") == FULL_TEST_SET)


def run_logged(command, cwd, log_path):
    """Run `command` in `cwd`, appending its output to `log_path`; return the exit code."""
    print(f"$ (cd {os.path.relpath(cwd, REPO_ROOT)} && {' '.join(command)})  >> "
          f"{os.path.relpath(log_path, REPO_ROOT)}", flush=True)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        return subprocess.call(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def relative_to_arch_folder(path):
    """Return `path` relative to an architecture folder if it lies inside the repository."""
    absolute = os.path.abspath(path)
    if absolute.startswith(REPO_ROOT + os.sep):
        return os.path.relpath(absolute, os.path.join(REPO_ROOT, "MLP"))
    return absolute


def training_command(arch, key, epochs, seed, data_dir, resume):
    folder = model_dir(arch, key)
    script = f"FP32_{arch}_FashionMNIST.py" if key == "fp32" else f"Quant_{arch}_FashionMNIST.py"
    command = [sys.executable, script, "--resume", str(resume), "--mode", "training",
               "--n_epoch", str(epochs), "--seed", str(seed), "--data_dir", data_dir,
               "--model_dir", os.path.relpath(folder, os.path.join(REPO_ROOT, arch))]
    if key != "fp32":
        command[2:2] = ["--k", key[1:]]
    return command


def train(arch, key, epochs, seed, data_dir):
    folder = model_dir(arch, key)
    os.makedirs(folder, exist_ok=True)
    resume = os.path.exists(os.path.join(folder, "checkpoint"))
    command = training_command(arch, key, epochs, seed, data_dir, resume)
    code = run_logged(command, os.path.join(REPO_ROOT, arch), os.path.join(folder, "training.log"))
    if code != 0:
        raise SystemExit(f"training {arch} {key} failed with exit code {code}; "
                         f"see {os.path.join(folder, 'training.log')}")
    update_manifest(arch, key, command)


_JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number",
                    bool: "boolean", type(None): "null"}


def read_manifest():
    """Read MANIFEST and return its entries, or {} if it does not exist.

    Exits with a message that names the file and the fix when it cannot be read or is invalid.
    """
    if not os.path.exists(MANIFEST):
        return {}
    rebuild = ("move it away, then rebuild it from the finished models with "
               "python -m ann2snn.reproduce --manifest_only")
    if os.path.abspath(MANIFEST).startswith(REPO_ROOT + os.sep):
        fix = (f"Restore it with git -C {REPO_ROOT} checkout -- "
               f"{os.path.relpath(MANIFEST, REPO_ROOT)}, or {rebuild}.")
    else:
        fix = f"To fix it, {rebuild}."
    try:
        with open(MANIFEST, encoding="utf-8") as stream:
            manifest = json.load(stream)
    except ValueError as error:
        # json.JSONDecodeError and UnicodeDecodeError are both subclasses of ValueError.
        raise SystemExit(f"error: the manifest {MANIFEST} is damaged: not valid JSON "
                         f"({error}). {fix}") from None
    except OSError as error:
        raise SystemExit(f"error: failed to read the manifest {MANIFEST} ({error}). {fix}") from None
    if not isinstance(manifest, dict):
        raise SystemExit(f"error: the manifest {MANIFEST} is invalid: expected a JSON object of "
                         f"models, found a JSON {_JSON_TYPE_NAMES[type(manifest)]}. {fix}")
    return manifest


def update_manifest(arch, key, command):
    path = os.path.join(model_dir(arch, key), "model_fashion_mnist.npz")
    metadata = read_metadata(path)
    manifest = read_manifest()
    manifest[f"{arch}/{key}"] = {
        "architecture": arch,
        "k": metadata.get("k"),
        "epochs": metadata.get("epochs"),
        "seed": metadata.get("seed"),
        "test_accuracy": metadata.get("test_accuracy"),
        "num_test_images": metadata.get("num_test_images"),
        "file": os.path.relpath(path, REPO_ROOT),
        "sha256": sha256(path),
        "command": f"cd {arch} && " + " ".join(["python"] + command[1:]),
    }
    write_json_atomically(MANIFEST, manifest)


def simulate(arch, key, data_dir, folder=None, figs_dir=None, time_steps=INITIAL_TIME_STEPS,
             options=()):
    """Run the Spiking script with --verify, doubling the time steps until every neuron settles.

    Returns the time steps of the run that passed. The model and spiking.log
    are in `folder` (default: pretrained/<arch>/<key>), and the logs go to
    `figs_dir` (default: the script's figs/). `options` are appended to every
    command, such as ("--num_images", "200").
    """
    folder = folder or model_dir(arch, key)
    arch_folder = os.path.join(REPO_ROOT, arch)
    summary_path = os.path.join(figs_dir or os.path.join(arch_folder, "figs"), key, "summary.json")
    log_path = os.path.join(folder, "spiking.log")
    while True:
        command = [sys.executable, f"Spiking_{arch}_FashionMNIST.py", "--k", key[1:],
                   "--time_steps", str(time_steps), "--verify", "--data_dir", data_dir,
                   "--model_dir", os.path.relpath(folder, arch_folder)]
        if figs_dir is not None:
            command += ["--figs_dir", os.path.relpath(figs_dir, arch_folder)]
        command += list(options)
        written_before = _modified(summary_path)
        code = run_logged(command, arch_folder, log_path)
        if code == 0:
            return time_steps
        if _modified(summary_path) in (None, written_before):
            raise SystemExit(f"spiking {arch} {key} failed with exit code {code} before writing "
                             f"its logs; see {log_path}")
        # Counts that have not settled yet differ from the ANN's too: only a run
        # whose spikes settled shows a real mismatch.
        with open(summary_path) as stream:
            settled = json.load(stream).get("settled_step")
        if settled is not None or time_steps >= MAX_TIME_STEPS:
            raise SystemExit(f"spiking {arch} {key} failed verification with {time_steps} time "
                             f"steps; see {log_path}")
        time_steps *= 2


def _modified(path):
    """Return the modification time of `path` in nanoseconds, or None if it does not exist."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def plot(arch):
    for figure in ("accuracy_speed", "sops", "sparsity"):
        subprocess.check_call([sys.executable, os.path.join("figs", f"{figure}.py")],
                              cwd=os.path.join(REPO_ROOT, arch))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ann2snn.reproduce",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(EPOCHS), action="append",
                        help="architectures to run (default: MLP, then LeNet)")
    parser.add_argument("--keys", nargs="+", choices=KEYS, default=list(KEYS),
                        help="models to run: k0 k1 k2 fp32 (default: all four)")
    parser.add_argument("--seed", type=seed_value, default=0,
                        help=f"training seed, 0 to {MAX_SEED} (default: 0)")
    parser.add_argument("--data_dir", type=nonempty_path, default=os.path.join(REPO_ROOT, "data"),
                        help="Fashion-MNIST folder (default: data/ in the repository)")
    parser.add_argument("--manifest_only", action="store_true",
                        help="only rewrite pretrained/manifest.json from the finished models, with the "
                             "seed each model records (--seed is then ignored)")
    parser.add_argument("--skip_spiking", action="store_true",
                        help="train only; no simulation or figures")
    args = parser.parse_args(argv)
    architectures = args.only or ["MLP", "LeNet"]
    # Commands run from <repo>/<arch>, so a data folder inside the repository is
    # passed relative to it and the manifest's commands work in any clone.
    args.data_dir = relative_to_arch_folder(args.data_dir)
    # Every finished training adds its entry to the manifest, so a damaged one is
    # reported now and not after the first training.
    read_manifest()
    if args.manifest_only:
        for arch in architectures:
            for key in args.keys:
                if is_finished(arch, key, EPOCHS[arch]):
                    # The seed comes from the model, so the command reproduces the file.
                    path = os.path.join(model_dir(arch, key), "model_fashion_mnist.npz")
                    seed = read_metadata(path).get("seed", args.seed)
                    update_manifest(arch, key, training_command(arch, key, EPOCHS[arch],
                                                                seed, args.data_dir, False))
        return 0

    for arch in architectures:
        for key in args.keys:
            if is_finished(arch, key, EPOCHS[arch]):
                print(f"{arch} {key}: finished model found, skipping training", flush=True)
            else:
                train(arch, key, EPOCHS[arch], args.seed, args.data_dir)
        if args.skip_spiking:
            continue
        for key in args.keys:
            if key != "fp32":
                simulate(arch, key, args.data_dir)
        plot(arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
