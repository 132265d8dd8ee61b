"""Bad input to the shared command line and to the data look-up.

Covers a --data_dir that contains only some of the four Fashion-MNIST files (completed,
never replaced), empty paths, unreadable input files, absurd --time_steps and the
--seed help of the Spiking scripts. The script cases run a real script of MLP/ as a
subprocess, with every folder that can be written inside pytest's temporary folders.
"""

import argparse
import errno
import gzip
import os
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ann2snn import cli
from ann2snn.data import FILE_NAMES, SYSTEM_DATA_DIR, DataError, find_data_files
from ann2snn.model_file import MODEL_FILE_NAME
from test_errors import assert_clean_error, assert_usage_error  # pytest puts tests/ on sys.path

REPO = Path(__file__).resolve().parents[1]
PRETRAINED_MODEL_DIR = REPO / "pretrained" / "MLP" / "k0"
TEST_FILES = (FILE_NAMES["test_images"], FILE_NAMES["test_labels"])
TRAIN_FILES = (FILE_NAMES["train_images"], FILE_NAMES["train_labels"])

requires_real_data = pytest.mark.skipif(
    not all((Path(SYSTEM_DATA_DIR) / name).is_file() for name in FILE_NAMES.values()),
    reason=f"Fashion-MNIST not installed in {SYSTEM_DATA_DIR}")


# --- Helpers ----------------------------------------------------------------------------


def write_idx(path, array):
    """Write a uint8 array as a gzip-compressed IDX file."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(f">{1 + array.ndim}I", 0x0800 | array.ndim, *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())


def write_files(folder, names, seed):
    """Write small IDX files under the given Fashion-MNIST names; `seed` varies their content."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        if "labels" in name:
            write_idx(folder / name, rng.integers(0, 10, size=5))
        else:
            write_idx(folder / name, rng.integers(0, 256, size=(5, 28, 28)))
    return folder


def file_contents(folder):
    """Return {relative path: bytes, or the link target for a symbolic link} under `folder`."""
    folder = Path(folder)
    contents = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            contents[str(path.relative_to(folder))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def run_script(script, *args, cwd=None, unprivileged=False):
    """Run MLP/<script> with `args` and return the completed process."""
    command = [sys.executable, str(REPO / "MLP" / script), *map(str, args)]
    if unprivileged:
        command = without_read_override(command)
    return subprocess.run(command, cwd=cwd or REPO / "MLP", capture_output=True, text=True,
                          timeout=300)


def without_read_override(command):
    """Return `command`, prefixed with setpriv as root, so that file permissions apply to it."""
    if os.geteuid() != 0:
        return command
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv, so a file of mode 000 stays readable")
    check = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"setpriv cannot drop the capabilities here: {check.stderr.strip()}")
    return [*prefix, *command]


def spiking(*args, **kwargs):
    return run_script("Spiking_MLP_FashionMNIST.py", "--k", 0, "--num_images", 20,
                      "--time_steps", 5, *args, **kwargs)


def copy_real_data(folder):
    """Copy the four Fashion-MNIST files from SYSTEM_DATA_DIR into `folder` and return it."""
    folder.mkdir(parents=True)
    for name in FILE_NAMES.values():
        shutil.copyfile(Path(SYSTEM_DATA_DIR) / name, folder / name)
    return folder


# --- A --data_dir with some of the four files ---------------------------------------------


def test_partial_local_folder_completed(tmp_path):
    local_dir = write_files(tmp_path / "data" / "fashion_mnist", TEST_FILES, seed=1)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)
    before = file_contents(local_dir)

    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert found == str(local_dir)
    after = file_contents(local_dir)
    for name in TEST_FILES:
        assert after[name] == before[name], f"{name} was replaced"
    for name in TRAIN_FILES:
        assert after[name] == (system_dir / name).read_bytes()


def test_partial_data_dir_completed_in_place(tmp_path):
    data_dir = write_files(tmp_path / "data", TEST_FILES, seed=1)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)
    before = file_contents(data_dir)

    found = find_data_files(str(data_dir), str(system_dir), download=False)

    assert found == str(data_dir)
    assert not (data_dir / "fashion_mnist").exists()
    after = file_contents(data_dir)
    for name in TEST_FILES:
        assert after[name] == before[name], f"{name} was replaced"
    assert sorted(after) == sorted(FILE_NAMES.values())


def test_partial_folders_in_both_layouts_rejected(tmp_path):
    data_dir = write_files(tmp_path / "data", TRAIN_FILES, seed=1)
    local_dir = write_files(data_dir / "fashion_mnist", TEST_FILES[:1], seed=1)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)
    before = file_contents(data_dir)

    with pytest.raises(DataError) as raised:
        find_data_files(str(data_dir), str(system_dir), download=False)

    message = str(raised.value)
    assert f"{local_dir} contains {TEST_FILES[0]} but not " in message
    assert f"{data_dir} contains {', '.join(TRAIN_FILES)} but not {', '.join(TEST_FILES)}" \
        in message
    assert "Move all four files into one of the two folders" in message
    assert file_contents(data_dir) == before


def test_partial_folder_without_system_copy_named(tmp_path):
    local_dir = write_files(tmp_path / "data" / "fashion_mnist", TEST_FILES, seed=1)
    before = file_contents(local_dir)

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(tmp_path / "no_system"), download=False)

    message = str(raised.value)
    assert f"{local_dir} contains {', '.join(TEST_FILES)} but not {', '.join(TRAIN_FILES)}" \
        in message
    assert f"add the missing files to {local_dir}" in message
    assert file_contents(local_dir) == before


def test_partial_folder_copy_failure_rejected(tmp_path, monkeypatch):
    local_dir = write_files(tmp_path / "data" / "fashion_mnist", TEST_FILES, seed=1)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)
    before = file_contents(local_dir)

    def fail_with_disk_full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", fail_with_disk_full)
    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    message = str(raised.value)
    assert f"into {local_dir} failed" in message
    assert "No space left on device" in message
    assert "Add the missing files there, or make the folder writable" in message
    assert file_contents(local_dir) == before


def test_partial_data_dir_skips_download(tmp_path, monkeypatch):
    data_dir = write_files(tmp_path / "data", TEST_FILES, seed=1)
    calls = []

    def load_fashion_mnist_dataset(shape, path):
        calls.append(path)

    files = types.SimpleNamespace(load_fashion_mnist_dataset=load_fashion_mnist_dataset)
    monkeypatch.setitem(sys.modules, "tensorlayer", types.SimpleNamespace(files=files))
    with pytest.raises(DataError) as raised:
        find_data_files(str(data_dir), str(tmp_path / "no_system"))

    assert calls == []
    assert f"so the files in {data_dir} would not be read" in str(raised.value)


def test_existing_empty_folder_gets_full_copy(tmp_path):
    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)

    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert found == str(tmp_path / "data" / "fashion_mnist")
    assert file_contents(found) == file_contents(system_dir)


def test_broken_symlink_not_replaced(tmp_path):
    local_dir = write_files(tmp_path / "data" / "fashion_mnist", TEST_FILES, seed=1)
    link = local_dir / TRAIN_FILES[0]
    link.symlink_to(tmp_path / "moved_away.gz")
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)
    before = file_contents(local_dir)

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert f"{link} exists but is not a file" in str(raised.value)
    assert file_contents(local_dir) == before


def test_empty_data_dir_string_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    system_dir = write_files(tmp_path / "system", FILE_NAMES.values(), seed=2)

    with pytest.raises(DataError) as raised:
        find_data_files("", str(system_dir), download=False)

    assert "invalid data folder '': the path is empty" in str(raised.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["system"]


@requires_real_data
def test_spiking_keeps_changed_test_label(tmp_path):
    local_dir = tmp_path / "data" / "fashion_mnist"
    local_dir.mkdir(parents=True)
    shutil.copyfile(Path(SYSTEM_DATA_DIR) / TEST_FILES[0], local_dir / TEST_FILES[0])
    real_labels = Path(SYSTEM_DATA_DIR) / TEST_FILES[1]
    labels = bytearray(gzip.decompress(real_labels.read_bytes()))
    labels[8] = (labels[8] + 1) % 10  # Byte 8 follows the 8-byte header: the first label.
    (local_dir / TEST_FILES[1]).write_bytes(gzip.compress(bytes(labels)))
    before = file_contents(local_dir)

    result = spiking("--model_dir", PRETRAINED_MODEL_DIR, "--data_dir", tmp_path / "data",
                     "--figs_dir", tmp_path / "figs")

    assert_clean_error(result, 0, "and kept the files it already contained")
    after = file_contents(local_dir)
    for name in TEST_FILES:
        assert after[name] == before[name], f"{name} was replaced"
    assert sorted(after) == sorted(FILE_NAMES.values())


# --- Empty paths --------------------------------------------------------------------------


PATH_OPTIONS = ("--data_dir", "--model_dir", "--figs_dir")


@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_spiking_empty_path_rejected(tmp_path, fashion_mnist_dir, option):
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    folders = {"--data_dir": fashion_mnist_dir, "--model_dir": PRETRAINED_MODEL_DIR,
               "--figs_dir": tmp_path / "figs", option: ""}
    options = [value for name, folder in folders.items() for value in (name, folder)]

    result = spiking(*options, cwd=work_dir)

    assert_usage_error(result, f"argument {option}: invalid path '': the path is empty")
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_training_empty_path_rejected(tmp_path, fashion_mnist_dir, option):
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    folders = {"--data_dir": fashion_mnist_dir, "--model_dir": tmp_path / "model",
               "--figs_dir": tmp_path / "figs", option: ""}
    options = [value for name, folder in folders.items() for value in (name, folder)]

    # The short training keeps the run to seconds if an empty path is ever accepted again.
    result = run_script("Quant_MLP_FashionMNIST.py", "--k", 0, "--n_epoch", 1,
                        "--num_train_images", 200, "--num_eval_images", 100,
                        "--batch_size", 100, *options, cwd=work_dir)

    assert_usage_error(result, f"argument {option}: invalid path '': the path is empty")
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("text", ["", " ", "\t"])
def test_blank_path_rejected_by_parser(text):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        cli.nonempty_path(text)

    assert f"invalid path {text!r}" in str(raised.value)
    assert ". for the current folder" in str(raised.value)


# --- Advice after an OSError ------------------------------------------------------------


def test_unreadable_model_gets_read_advice(tmp_path, fashion_mnist_dir):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model_path = model_dir / MODEL_FILE_NAME
    shutil.copyfile(PRETRAINED_MODEL_DIR / MODEL_FILE_NAME, model_path)
    model_path.chmod(0o000)

    result = spiking("--model_dir", model_dir, "--data_dir", fashion_mnist_dir,
                     "--figs_dir", tmp_path / "figs", unprivileged=True)

    assert_clean_error(result, 1, "Permission denied", str(model_path),
                       "Check that the file exists and is readable")
    assert "writable" not in result.stderr, result.stderr
    assert not (tmp_path / "figs").exists()


@requires_real_data
def test_unreadable_data_file_gets_read_advice(tmp_path):
    data_file = copy_real_data(tmp_path / "data" / "fashion_mnist") / TEST_FILES[0]
    data_file.chmod(0o000)

    result = spiking("--model_dir", PRETRAINED_MODEL_DIR, "--data_dir", tmp_path / "data",
                     "--figs_dir", tmp_path / "figs", unprivileged=True)

    assert_clean_error(result, 1, "Permission denied", str(data_file),
                       f"Make the file readable for this user (for example with chmod a+r "
                       f"{data_file})")
    assert "Replace the file" not in result.stderr, result.stderr


def test_write_errors_keep_write_advice(tmp_path):
    readable = tmp_path / "readable.txt"
    readable.write_text("kept\n")
    cases = {
        "disk full": OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "new")),
        "folder not writable": PermissionError(errno.EACCES, "Permission denied",
                                               str(tmp_path / "new")),
        "existing readable file": PermissionError(errno.EACCES, "Permission denied",
                                                  str(readable)),
        "missing folder": FileNotFoundError(errno.ENOENT, "No such file or directory",
                                            str(tmp_path / "gone" / "new")),
        "no file name": OSError(errno.EIO, "Input/output error"),
    }
    for case, error in cases.items():
        advice = cli.os_error_advice(error)
        assert "is writable and has free space" in advice, case


def test_missing_file_gets_read_advice(tmp_path):
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "gone"))

    assert "Check that the file exists and is readable" in cli.os_error_advice(error)


# --- --time_steps bound -------------------------------------------------------------------


def test_time_steps_beyond_bound_rejected(tmp_path, fashion_mnist_dir):
    too_many = 99999999999999999999
    result = spiking("--model_dir", PRETRAINED_MODEL_DIR, "--data_dir", fashion_mnist_dir,
                     "--figs_dir", tmp_path / "figs", "--time_steps", too_many)

    assert_usage_error(result, f"argument --time_steps: invalid value {too_many}: use at most "
                               f"{cli.MAX_TIME_STEPS} time steps")
    assert not (tmp_path / "figs").exists()


def test_time_steps_bound_enforced_by_parser():
    assert cli.time_step_count(str(cli.MAX_TIME_STEPS)) == cli.MAX_TIME_STEPS
    with pytest.raises(argparse.ArgumentTypeError):
        cli.time_step_count(str(cli.MAX_TIME_STEPS + 1))


def test_time_steps_at_bound_end_in_memory_error(tmp_path, fashion_mnist_dir):
    """The worst case at the bound, one batch per test image, ends in a usage error."""
    result = run_script("Spiking_MLP_FashionMNIST.py", "--k", 0,
                        "--time_steps", cli.MAX_TIME_STEPS, "--batch_size", 1,
                        "--model_dir", PRETRAINED_MODEL_DIR, "--data_dir", fashion_mnist_dir,
                        "--figs_dir", tmp_path / "figs")

    assert_usage_error(result, "not enough memory to simulate 10000 images",
                       f"--time_steps {cli.MAX_TIME_STEPS}")
    assert not (tmp_path / "figs").exists()


# --- --seed help --------------------------------------------------------------------------


def seed_help(parser):
    """Return the help text of --seed with its line breaks undone."""
    (action,) = [action for action in parser._actions if "--seed" in action.option_strings]
    return " ".join(action.help.split())


def test_spiking_seed_help_marks_unused():
    parser = cli.spiking_parser("test", str(REPO / "MLP" / "Spiking_MLP_FashionMNIST.py"))

    text = seed_help(parser)

    assert "It is unused here, because the conversion and simulation are deterministic" in text
    assert "initialization" not in text


def test_training_seed_help_names_its_use():
    parser = cli.training_parser("test", str(REPO / "MLP" / "Quant_MLP_FashionMNIST.py"),
                                 quantized=True, default_epochs=1)

    assert seed_help(parser).startswith("random seed for initialization and shuffling")
