"""The trained model as an npz file: parameters in layer order, plus metadata.

Native layout (written by `save_model`, read without pickle):

    param_00, param_01, ...   the parameters in the order of the paper's files: per
                              hidden layer weights (HWIO), beta, gamma, moving mean,
                              moving variance; then the output weights (in, classes)
    names                     the parameter names, e.g. "conv1/W"
    metadata                  a JSON string: architecture, k (null for full precision),
                              batch-norm epsilon, test accuracy, epochs, ...

The paper's original scripts stored the same list as one pickled object array
under the key "params". Unpickling can run arbitrary code, so such a file is
read only when the caller passes `allow_pickle=True`.
"""

import io
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .architectures import ARCHITECTURES, get_architecture
from .cli import MAX_K, MAX_SEED
from .data import TEST_SIZE
from .logs import is_finite_number, is_int, write_bytes_atomically

MODEL_FILE_NAME = "model_fashion_mnist.npz"
FORMAT_VERSION = 1
# The folder of the shipped models. It contains no checkpoints, so git restores a damaged model.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "pretrained")


class ModelFileError(Exception):
    """A model file that is missing, unreadable or does not fit the request."""


@dataclass
class Model:
    """Parameters of a trained network and what is known about how it was trained."""

    params: list
    metadata: dict
    path: str

    @property
    def k(self):
        return self.metadata.get("k")

    @property
    def architecture(self):
        return get_architecture(self.metadata["architecture"])


def save_model(path, arch, params, metadata):
    """Write `params` (in `arch.param_shapes()` order) and `metadata` to `path` atomically.

    The npz is built in memory, then written under a temporary name in the same
    folder, flushed to disk and renamed over `path` (logs.write_bytes_atomically),
    so a crash never leaves a half-written model under `path`.
    """
    _check_params(arch, params, path)
    arrays = {f"param_{index:02d}": np.asarray(value, dtype=np.float32)
              for index, value in enumerate(params)}
    arrays["names"] = np.array([name for name, _ in arch.param_shapes()])
    full_metadata = {"format_version": FORMAT_VERSION, "architecture": arch.name}
    full_metadata.update(metadata)
    arrays["metadata"] = np.array(json.dumps(full_metadata, sort_keys=True))

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_bytes_atomically(path, buffer.getvalue())


def load_model(path, arch=None, k="any", allow_pickle=False):
    """Read the model at `path` and check it against the request.

    `arch`: the expected architecture (None accepts any). `k`: the expected
    quantization level; None expects a full-precision model, "any" accepts any.
    Raises ModelFileError with the file, what was found and what was expected.
    """
    if not os.path.isfile(path):
        raise ModelFileError(
            f"model file not found: {path}. Train one first with the Quant_ script "
            f"(--mode training), or pass --model_dir with the folder that contains "
            f"{MODEL_FILE_NAME}.")
    _check_is_zip(path)
    try:
        with np.load(path, allow_pickle=allow_pickle) as archive:
            if "params" in archive.files and "param_00" not in archive.files:
                model = _read_original_layout(path, archive, arch, allow_pickle)
            else:
                model = _read_native_layout(path, archive)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, TypeError, KeyError) as error:
        raise ModelFileError(
            f"{path} is not a readable model npz ({error}). {_recreate_hint(path)}") from error

    _check_request(model, arch, k)
    _check_params(model.architecture, model.params, path)
    return model


def _recreate_hint(path):
    """Return advice on how to re-create or restore the unusable model file at `path`.

    A checkpoint next to the file can write it again. pretrained/ ships no
    checkpoints, so a damaged shipped model is restored from git instead.
    """
    # Imported here because training imports this module.
    from .training import CHECKPOINT_STATE_NAME

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isfile(os.path.join(folder, CHECKPOINT_STATE_NAME)):
        return (f"Re-create it from the checkpoint in {folder}: run the Quant_ script (FP32_ for "
                f"a full-precision model) with the --k it was trained with and --resume True "
                f"--mode inference --model_dir {folder}, plus the --figs_dir of its results (by "
                f"default the run records its test accuracy in figs/ next to the script).")
    real_path = os.path.realpath(path)
    pretrained = os.path.realpath(PRETRAINED_DIR)
    if real_path.startswith(pretrained + os.sep):
        repository = os.path.dirname(pretrained)
        return (f"It is a shipped model, and pretrained/ contains no checkpoints: restore it "
                f"with git -C {repository} checkout -- {os.path.relpath(real_path, repository)}")
    return (f"No checkpoint is in {folder}, so train the model again with the Quant_ script "
            f"(FP32_ for a full-precision model) and --mode training, or replace the file with "
            f"an intact copy, such as a shipped model from {PRETRAINED_DIR}.")


def _check_is_zip(path):
    """Raise ModelFileError unless `path` is a complete zip archive, which every npz is."""
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as stream:
        start = stream.read(6)
    if start.startswith(b"PK\x03\x04"):
        found = "a zip archive without its central directory, so the file is truncated"
    elif start == b"\x93NUMPY":
        found = "a single .npy array"
    elif not start:
        found = "an empty file"
    else:
        found = f"a file that starts with the bytes {start!r}"
    raise ModelFileError(
        f"{path} is not a model npz: found {found}, expected a zip archive written by "
        f"numpy.savez. {_recreate_hint(path)}")


def _read_native_layout(path, archive):
    if "metadata" not in archive.files:
        raise ModelFileError(
            f"{path}: no 'metadata' entry (entries found: {', '.join(archive.files) or 'none'}); "
            f"expected a model written by this project. {_recreate_hint(path)}")
    metadata = json.loads(str(archive["metadata"]))
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: the metadata is not a JSON object. {_recreate_hint(path)}")
    _check_metadata(path, metadata)
    names = sorted(name for name in archive.files if name.startswith("param_"))
    params = [np.asarray(archive[name], dtype=np.float32) for name in names]
    return Model(params=params, metadata=metadata, path=path)


# The metadata fields that the project reads, besides the architecture, as (name, validity
# test, expected value). A field may be absent, and null passes only where the readers
# handle it. Other fields (test_loss, batch_size, command, ...) are only recorded.
_METADATA_FIELDS = (
    ("k", lambda value: value is None or (is_int(value) and 0 <= value <= MAX_K),
     f"an integer from 0 to {MAX_K}, or null (full precision)"),
    ("bn_epsilon", lambda value: is_finite_number(value) and value > 0,
     "a positive finite number (the batch-norm epsilon of the training, 1e-05 in the models "
     "this project writes)"),
    ("test_accuracy", lambda value: value is None or (is_finite_number(value) and 0 <= value <= 1),
     "a fraction from 0 to 1, or null"),
    ("num_test_images", lambda value: value is None or (is_int(value)
                                                        and 1 <= value <= TEST_SIZE),
     f"an integer from 1 to {TEST_SIZE} (the size of the test set), or null"),
    ("epochs", lambda value: value is None or (is_int(value) and value >= 1),
     "a positive integer, or null"),
    ("seed", lambda value: is_int(value) and 0 <= value <= MAX_SEED,
     f"an integer from 0 to {MAX_SEED}"),
)


def _check_metadata(path, metadata):
    """Raise ModelFileError, naming `path`, the field and its value, for the first invalid field."""
    found_arch = metadata.get("architecture")
    # A list or dict cannot be looked up in ARCHITECTURES, so the type is checked first.
    if not isinstance(found_arch, str) or found_arch not in ARCHITECTURES:
        raise ModelFileError(
            f"{path}: the metadata names architecture {found_arch!r}, expected one of "
            f"{sorted(ARCHITECTURES)}. {_recreate_hint(path)}")
    for name, is_valid, expected in _METADATA_FIELDS:
        if name in metadata and not is_valid(metadata[name]):
            raise ModelFileError(
                f"{path}: invalid metadata: {name} is {json.dumps(metadata[name])}, expected "
                f"{expected}. {_recreate_hint(path)}")


def _read_original_layout(path, archive, arch, allow_pickle):
    if not allow_pickle:
        raise ModelFileError(
            f"{path} stores its parameters as a pickled object array (the layout of the "
            f"paper's original scripts), expected the layout without pickle that this "
            f"project writes. Loading a pickle can execute arbitrary code, so the file is "
            f"rejected by default. If you trust this file, pass --allow_pickle.")
    if arch is None:
        raise ModelFileError(
            f"{path} is in the original layout, which does not record the architecture; "
            f"pass the expected architecture to load it")
    params = [np.asarray(value, dtype=np.float32) for value in archive["params"]]
    # The original files carry no metadata: the architecture is the one requested,
    # and k is unknown (the caller's --k is trusted).
    metadata = {"architecture": arch.name, "k": "unknown", "layout": "original (pickled)"}
    return Model(params=params, metadata=metadata, path=path)


def _check_request(model, arch, k):
    found_arch = model.metadata.get("architecture")
    if arch is not None and found_arch != arch.name:
        raise ModelFileError(
            f"{model.path} contains a model of the {found_arch} architecture, but "
            f"{arch.name} was expected. Pass --model_dir with the folder of a {arch.name} "
            f"model, or run the {found_arch} scripts.")
    found_k = model.metadata.get("k")
    if k == "any" or found_k == "unknown":
        return
    if k is not None and found_k is None:
        raise ModelFileError(
            f"{model.path} contains a full-precision model, but a quantized model with k={k} "
            f"was expected. Spiking conversion needs a model from the Quant_ script.")
    if found_k != k:
        found = "full precision" if found_k is None else f"k={found_k}"
        wanted = "full precision" if k is None else f"k={k}"
        raise ModelFileError(
            f"{model.path} was trained with {found}, but {wanted} was requested. "
            f"Pass the matching --k, or train a model with --k {k}.")


def _check_params(arch, params, path):
    expected = arch.param_shapes()
    if len(params) != len(expected):
        raise ModelFileError(
            f"{path}: {len(params)} parameter arrays found, {len(expected)} expected "
            f"for {arch.name}. {_recreate_hint(path)}")
    for value, (name, shape) in zip(params, expected):
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise ModelFileError(
                f"{path}: parameter {name} has shape {tuple(value.shape)}, "
                f"expected {tuple(shape)} for {arch.name}. {_recreate_hint(path)}")
        bad_count = int(np.count_nonzero(~np.isfinite(value)))
        if bad_count:
            raise ModelFileError(
                f"{path}: parameter {name} contains {bad_count} NaN or Inf values, expected "
                f"finite values; the training diverged or the file is damaged. Retrain the model.")
        negative_count = int(np.count_nonzero(value < 0)) if name.endswith("/moving_variance") else 0
        if negative_count:
            raise ModelFileError(
                f"{path}: parameter {name} contains {negative_count} negative values, but a "
                f"variance is at least 0; the file is damaged or was not written by batch-norm "
                f"training. Retrain the model.")
