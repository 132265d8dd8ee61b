"""Error handling of the scripts: bad model files, pickled models and invalid options.

Every case runs a real script of LeNet/ or MLP/ as a subprocess, as a user runs it,
with --data_dir, --model_dir and --figs_dir inside pytest's temporary folders. A
handled error prints one message and no traceback. Option errors exit with 2 and
argparse's "usage: ... error: ..." form, model-file errors exit with 1, and neither
writes anything.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ann2snn.architectures import MLP
from ann2snn.logs import LOG_NAMES, SUMMARY_NAME
from ann2snn.model_file import MODEL_FILE_NAME, load_model, save_model

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 400
EVAL_IMAGES = 200
SPIKING_IMAGES = 60
SPIKING_STEPS = 6


def run_script(arch_name, script, *args):
    """Run `<arch_name>/<script>` with `args` and return the completed process."""
    command = [sys.executable, str(REPO / arch_name / script), *map(str, args)]
    return subprocess.run(command, cwd=REPO / arch_name, capture_output=True, text=True,
                          timeout=300)


def assert_clean_error(result, exit_code, *fragments):
    """Check the exit code, the absence of a traceback and each fragment of the message."""
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"


def assert_usage_error(result, *fragments):
    assert_clean_error(result, 2, *fragments)
    assert result.stderr.startswith("usage: "), result.stderr
    assert result.stderr.count(": error: ") == 1, result.stderr


def assert_empty(folder):
    """Check that `folder` was not created, or is still empty."""
    folder = Path(folder)
    assert not folder.exists() or not any(folder.iterdir()), sorted(folder.iterdir())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Return the folder of a quantized MLP (k=0) trained for one epoch on a slice."""
    root = tmp_path_factory.mktemp("trained")
    result = run_script(
        "MLP", "Quant_MLP_FashionMNIST.py", "--k", 0, "--resume", "False", "--mode", "training",
        "--n_epoch", 1, "--batch_size", 100, "--num_train_images", TRAIN_IMAGES,
        "--num_eval_images", EVAL_IMAGES, "--data_dir", root / "data",
        "--model_dir", root / "model", "--figs_dir", root / "figs")
    assert result.returncode == 0, result.stderr
    return root


def spiking(arch_name, model_dir, figs_dir, data_dir, *extra, k=0):
    return run_script(
        arch_name, f"Spiking_{arch_name}_FashionMNIST.py", "--k", k,
        "--time_steps", SPIKING_STEPS, "--num_images", SPIKING_IMAGES,
        "--data_dir", data_dir, "--model_dir", model_dir, "--figs_dir", figs_dir, *extra)


def model_copy(trained, tmp_path):
    """Return a new model folder with a copy of the trained npz."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(trained / "model" / MODEL_FILE_NAME, folder / MODEL_FILE_NAME)
    return folder


def native_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


# --- Model files ------------------------------------------------------------------


def test_spiking_model_missing(trained, tmp_path):
    (tmp_path / "model").mkdir()
    result = spiking("MLP", tmp_path / "model", tmp_path / "figs", trained / "data")
    path = tmp_path / "model" / MODEL_FILE_NAME
    assert_clean_error(result, 1, f"model file not found: {path}", "Quant_ script")
    assert_empty(tmp_path / "figs")


def test_spiking_model_other_architecture(trained, tmp_path):
    model_dir = model_copy(trained, tmp_path)
    result = spiking("LeNet", model_dir, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, str(model_dir / MODEL_FILE_NAME),
                       "a model of the MLP architecture, but LeNet was expected")
    assert_empty(tmp_path / "figs")


def test_spiking_model_other_k(trained, tmp_path):
    model_dir = model_copy(trained, tmp_path)
    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data", k=1)
    assert_clean_error(result, 1, str(model_dir / MODEL_FILE_NAME),
                       "was trained with k=0, but k=1 was requested", "--k")
    assert_empty(tmp_path / "figs")


def test_spiking_full_precision_model(trained, tmp_path):
    # The FP32_ script writes its npz with this same call (training.run, k=None).
    model = load_model(str(trained / "model" / MODEL_FILE_NAME), arch=MLP, k=0)
    metadata = dict(model.metadata, k=None)
    (tmp_path / "model").mkdir()
    save_model(str(tmp_path / "model" / MODEL_FILE_NAME), MLP, model.params, metadata)

    result = spiking("MLP", tmp_path / "model", tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, "contains a full-precision model",
                       "quantized model with k=0 was expected", "Quant_ script")
    assert_empty(tmp_path / "figs")


def test_spiking_model_wrong_shape(trained, tmp_path):
    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    arrays = native_arrays(path)
    arrays["param_10"] = arrays["param_10"].T.copy()  # output/W, (400, 10) in the file
    np.savez(path, **arrays)

    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, str(path),
                       "parameter output/W has shape (10, 400), expected (400, 10) for MLP",
                       "train the model again with the Quant_ script")
    assert_empty(tmp_path / "figs")


def test_spiking_model_missing_parameter(trained, tmp_path):
    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    arrays = native_arrays(path)
    del arrays["param_10"]
    np.savez(path, **arrays)

    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, "10 parameter arrays found, 11 expected for MLP")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_spiking_model_not_finite(trained, tmp_path, bad_value):
    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    arrays = native_arrays(path)
    arrays["param_02"][:3] = bad_value  # fc1/gamma
    np.savez(path, **arrays)

    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, str(path), "parameter fc1/gamma contains 3 NaN or Inf values",
                       "expected finite values")
    assert_empty(tmp_path / "figs")


def test_spiking_model_negative_variance(trained, tmp_path):
    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    arrays = native_arrays(path)
    arrays["param_04"][:2] = -0.5  # fc1/moving_variance
    np.savez(path, **arrays)

    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data", "--verify")
    assert_clean_error(result, 1, str(path), "parameter fc1/moving_variance contains 2 negative "
                       "values", "Retrain the model")
    assert_empty(tmp_path / "figs")


def truncated(data):
    return data[:len(data) // 2]


def npy_file(data):
    return b"\x93NUMPY" + data[6:100]


DAMAGED_FILES = {
    "truncated": (truncated, "without its central directory, so the file is truncated"),
    "text": (lambda data: b"weights = [0.1, 0.2]\n", "starts with the bytes b'weigh"),
    "empty": (lambda data: b"", "an empty file"),
    "npy": (npy_file, "a single .npy array"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_FILES))
def test_spiking_model_not_npz(trained, tmp_path, damage):
    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    change, found = DAMAGED_FILES[damage]
    path.write_bytes(change(path.read_bytes()))

    result = spiking("MLP", model_dir, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, f"{path} is not a model npz", found,
                       "expected a zip archive written by numpy.savez")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_empty(tmp_path / "figs")


def test_load_model_reports_unknown_architecture(trained, tmp_path):
    from ann2snn.model_file import ModelFileError

    model_dir = model_copy(trained, tmp_path)
    path = model_dir / MODEL_FILE_NAME
    arrays = native_arrays(path)
    metadata = json.loads(str(arrays["metadata"]))
    metadata["architecture"] = "ResNet"
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(path, **arrays)

    with pytest.raises(ModelFileError, match="names architecture 'ResNet', expected one of"):
        load_model(str(path))


# --- Models in the original pickled layout -------------------------------------------


def write_original_layout(path, params):
    """Write `params` in the original pickled layout: np.savez(path, params=list_of_arrays)."""
    # NumPy 2 rejects a ragged list, so the object array is built by hand.
    packed = np.empty(len(params), dtype=object)
    packed[:] = params
    np.savez(path, params=packed)


@pytest.fixture(scope="module")
def pickled_model(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("pickled")
    model = load_model(str(trained / "model" / MODEL_FILE_NAME), arch=MLP, k=0)
    (root / "model").mkdir()
    write_original_layout(root / "model" / MODEL_FILE_NAME, model.params)
    return root / "model"


def test_pickled_model_rejected_by_default(trained, pickled_model, tmp_path):
    result = spiking("MLP", pickled_model, tmp_path / "figs", trained / "data")
    assert_clean_error(result, 1, str(pickled_model / MODEL_FILE_NAME), "pickled object array",
                       "arbitrary code", "--allow_pickle")
    assert_empty(tmp_path / "figs")


def test_pickled_model_converts_like_native(trained, pickled_model, tmp_path):
    native = spiking("MLP", trained / "model", tmp_path / "native", trained / "data")
    assert native.returncode == 0, native.stderr
    pickled = spiking("MLP", pickled_model, tmp_path / "pickled", trained / "data",
                      "--allow_pickle")
    assert pickled.returncode == 0, pickled.stderr
    assert "original layout without metadata: converting it as k=0" in pickled.stderr

    for name in LOG_NAMES:
        native_log = (tmp_path / "native" / "k0" / f"{name}.txt").read_text()
        pickled_log = (tmp_path / "pickled" / "k0" / f"{name}.txt").read_text()
        assert pickled_log == native_log, name
    summary = json.loads((tmp_path / "pickled" / "k0" / SUMMARY_NAME).read_text())
    assert summary["k"] == 0
    assert summary["num_images"] == SPIKING_IMAGES


# --- Options ------------------------------------------------------------------------


SPIKING_OPTION_CASES = {
    "k negative": (["--k", "-1"], "argument --k: invalid quantization level -1"),
    "k too large": (["--k", "99"], "argument --k: invalid quantization level 99: use 0 to 8"),
    "k not integer": (["--k", "1.5"], "argument --k: invalid quantization level '1.5'"),
    "time steps zero": (["--time_steps", "0"], "argument --time_steps: invalid value 0"),
    "batch size zero": (["--batch_size", "0"], "argument --batch_size: invalid value 0"),
    "num images zero": (["--num_images", "0"], "argument --num_images: invalid value 0"),
    "num images too large": (["--num_images", "10001"],
                             "--num_images 10001 is larger than the test set (10000 images)"),
    "seed not integer": (["--seed", "x"], "argument --seed: invalid seed 'x'"),
}


@pytest.mark.parametrize("case", sorted(SPIKING_OPTION_CASES))
def test_spiking_option_rejected(trained, tmp_path, case):
    options, message = SPIKING_OPTION_CASES[case]
    script = REPO / "MLP" / "Spiking_MLP_FashionMNIST.py"
    # Later options win in argparse, so each case overrides a valid default set.
    command = [sys.executable, str(script), "--k", "0", "--time_steps", "5",
               "--data_dir", str(tmp_path / "data"), "--model_dir", str(trained / "model"),
               "--figs_dir", str(tmp_path / "figs"), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert_usage_error(result, message)
    assert_empty(tmp_path / "figs")
    assert_empty(tmp_path / "data")


TRAINING_OPTION_CASES = {
    "k negative": (["--k", "-1"], "argument --k: invalid quantization level -1"),
    "k too large": (["--k", "1000"], "argument --k: invalid quantization level 1000"),
    "unknown mode": (["--mode", "train"], "argument --mode: invalid choice: 'train'"),
    "batch size zero": (["--batch_size", "0"], "argument --batch_size: invalid value 0"),
    "epochs zero": (["--n_epoch", "0"], "argument --n_epoch: invalid value 0"),
    "resume not boolean": (["--resume", "maybe"], "argument --resume: invalid boolean 'maybe'"),
    "seed negative": (["--seed", "-5"], "argument --seed: invalid seed -5: use an integer from 0"),
    "seed too large": (["--seed", str(2 ** 32)], f"argument --seed: invalid seed {2 ** 32}"),
    "too many training images": (["--num_train_images", "100000"],
                                 "--num_train_images 100000 is larger than the training set "
                                 "(50000 images"),
    "too many evaluation images": (["--num_eval_images", "20000"],
                                   "--num_eval_images 20000 is larger than the validation and "
                                   "test sets (10000 images each)"),
    "batch larger than slice": (["--num_train_images", "50", "--batch_size", "100"],
                                "--batch_size 100 is larger than the 50 training images"),
    "resume without checkpoint": (["--resume", "True"],
                                  "--resume True needs a checkpoint, but"),
    "inference without checkpoint": (["--mode", "inference"],
                                     "--mode inference needs a checkpoint, but"),
}


@pytest.mark.parametrize("case", sorted(TRAINING_OPTION_CASES))
def test_training_option_rejected(tmp_path, case):
    options, message = TRAINING_OPTION_CASES[case]
    result = run_script("MLP", "Quant_MLP_FashionMNIST.py", "--data_dir", tmp_path / "data",
                        "--model_dir", tmp_path / "model", "--figs_dir", tmp_path / "figs",
                        *options)
    assert_usage_error(result, message)
    for folder in ("model", "figs", "data"):
        assert_empty(tmp_path / folder)


def test_fp32_resume_without_checkpoint(tmp_path):
    result = run_script("MLP", "FP32_MLP_FashionMNIST.py", "--resume", "True",
                        "--data_dir", tmp_path / "data", "--model_dir", tmp_path / "model",
                        "--figs_dir", tmp_path / "figs")
    assert_usage_error(result, "--resume True needs a checkpoint",
                       "--resume False --mode training")
    assert_empty(tmp_path / "model")


def test_resume_with_checkpoint_files_missing(tmp_path):
    """A state file that names deleted checkpoint files is a usage error, found before TensorFlow."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "checkpoint").write_text(
        'model_checkpoint_path: "model_fashion_mnist_advanced.ckpt"\n'
        'all_model_checkpoint_paths: "model_fashion_mnist_advanced.ckpt"\n')
    result = run_script("MLP", "Quant_MLP_FashionMNIST.py", "--k", 0, "--resume", "True",
                        "--data_dir", tmp_path / "data", "--model_dir", model_dir,
                        "--figs_dir", tmp_path / "figs")
    assert_usage_error(result, "names no checkpoint whose files exist")
    assert sorted(path.name for path in model_dir.iterdir()) == ["checkpoint"]
    assert_empty(tmp_path / "figs")
    assert_empty(tmp_path / "data")


def test_verify_reports_unsettled_counts(trained, tmp_path):
    result = run_script(
        "MLP", "Spiking_MLP_FashionMNIST.py", "--k", 0, "--time_steps", 1,
        "--num_images", SPIKING_IMAGES, "--verify", "--data_dir", trained / "data",
        "--model_dir", trained / "model", "--figs_dir", tmp_path / "figs")
    assert_clean_error(result, 1, "counts have not settled", "more --time_steps")


def test_summary_line_single_image(trained, tmp_path):
    result = spiking("MLP", trained / "model", tmp_path / "figs", trained / "data",
                     "--num_images", 1, "--time_steps", 1)

    assert result.returncode == 0, result.stderr
    assert "after 1 time step (" in result.stdout
    assert "on the same 1 image;" in result.stdout


def test_spiking_time_steps_beyond_memory(trained, tmp_path):
    result = spiking("MLP", trained / "model", tmp_path / "figs", trained / "data",
                     "--time_steps", 10 ** 13)
    assert_usage_error(result, "not enough memory to simulate", f"--time_steps {10 ** 13}",
                       "Use fewer --time_steps")
    assert_empty(tmp_path / "figs")


# --- Checkpoints --------------------------------------------------------------------


def checkpoint_copy(trained, tmp_path):
    """Return a new folder with a copy of the trained checkpoint and npz."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    return model_dir


def file_contents(folder):
    return {path.name: path.read_bytes() for path in Path(folder).iterdir()}


def resume_training(arch_name, model_dir, tmp_path, data_dir, k=0):
    """Run the Quant_ script of `arch_name` with --resume True on `model_dir`, for one more epoch."""
    return run_script(arch_name, f"Quant_{arch_name}_FashionMNIST.py", "--k", k,
                      "--resume", "True", "--n_epoch", 2, "--num_train_images", TRAIN_IMAGES,
                      "--num_eval_images", EVAL_IMAGES, "--data_dir", data_dir,
                      "--model_dir", model_dir, "--figs_dir", tmp_path / "figs")


def test_resume_checkpoint_other_k(trained, tmp_path):
    model_dir = checkpoint_copy(trained, tmp_path)
    before = file_contents(model_dir)
    result = resume_training("MLP", model_dir, tmp_path, tmp_path / "data", k=2)
    assert_clean_error(result, 1, "was trained with k=0, but k=2 was requested")
    assert file_contents(model_dir) == before
    assert_empty(tmp_path / "figs")
    assert_empty(tmp_path / "data")


def test_resume_checkpoint_other_architecture(trained, tmp_path):
    model_dir = checkpoint_copy(trained, tmp_path)
    before = file_contents(model_dir)
    result = resume_training("LeNet", model_dir, tmp_path, trained / "data")
    assert_clean_error(result, 1, "does not fit the LeNet network", "NotFoundError",
                       "Pass --model_dir with a LeNet checkpoint", "--resume False")
    assert file_contents(model_dir) == before
    assert_empty(tmp_path / "figs")


def test_resume_checkpoint_truncated(trained, tmp_path):
    model_dir = checkpoint_copy(trained, tmp_path)
    (data_file,) = model_dir.glob("*.data-00000-of-00001")
    data_file.write_bytes(data_file.read_bytes()[:1000])
    before = file_contents(model_dir)
    result = resume_training("MLP", model_dir, tmp_path, trained / "data")
    assert_clean_error(result, 1, "could not be read", "truncated or damaged")
    assert "does not fit" not in result.stderr, result.stderr
    assert file_contents(model_dir) == before
    assert_empty(tmp_path / "figs")


# --- Output folders -------------------------------------------------------------------


def test_spiking_figs_dir_read_only(trained, tmp_path, read_only_folder):
    for figs_dir in (read_only_folder, read_only_folder / "figs"):
        result = spiking("MLP", trained / "model", figs_dir, trained / "data")
        assert_usage_error(result, f"cannot write to --figs_dir {figs_dir}",
                           f"{read_only_folder} is not writable", "Pass a folder you can write to")
    assert sorted(path.name for path in read_only_folder.iterdir()) == ["kept.txt"]


def test_training_folders_read_only(tmp_path, read_only_folder):
    for option in ("--model_dir", "--figs_dir"):
        folders = {"--model_dir": tmp_path / "model", "--figs_dir": tmp_path / "figs",
                   option: read_only_folder / "sub"}
        result = run_script("MLP", "Quant_MLP_FashionMNIST.py", "--data_dir", tmp_path / "data",
                            "--model_dir", folders["--model_dir"],
                            "--figs_dir", folders["--figs_dir"])
        assert_usage_error(result, f"cannot write to {option} {read_only_folder / 'sub'}")
    assert sorted(path.name for path in read_only_folder.iterdir()) == ["kept.txt"]
    for folder in ("model", "figs", "data"):
        assert_empty(tmp_path / folder)


def test_output_folder_is_file(trained, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("kept\n")
    result = spiking("MLP", trained / "model", a_file, trained / "data")
    assert_usage_error(result, f"--figs_dir {a_file} is a file, not a folder")
    result = run_script("MLP", "Quant_MLP_FashionMNIST.py", "--data_dir", tmp_path / "data",
                        "--model_dir", a_file / "model", "--figs_dir", tmp_path / "figs")
    assert_usage_error(result, f"--model_dir {a_file / 'model'} cannot be created because "
                               f"{a_file} is a file")
    assert a_file.read_text() == "kept\n"
