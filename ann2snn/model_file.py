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
from .logs import write_bytes_atomically

MODEL_FILE_NAME = "model_fashion_mnist.npz"
FORMAT_VERSION = 1


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
            f"{path} is not a readable model npz ({error}). {_RECREATE_HINT}") from error

    _check_request(model, arch, k)
    _check_params(model.architecture, model.params, path)
    return model


_RECREATE_HINT = ("Re-create it with the Quant_ script: --resume True --mode inference "
                  "writes it from the checkpoint.")


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
        f"numpy.savez. {_RECREATE_HINT}")


def _read_native_layout(path, archive):
    if "metadata" not in archive.files:
        raise ModelFileError(
            f"{path}: no 'metadata' entry (entries found: {', '.join(archive.files) or 'none'}); "
            f"expected a model written by this project. {_RECREATE_HINT}")
    metadata = json.loads(str(archive["metadata"]))
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: the metadata is not a JSON object. {_RECREATE_HINT}")
    found_arch = metadata.get("architecture")
    if found_arch not in ARCHITECTURES:
        raise ModelFileError(
            f"{path}: the metadata names architecture {found_arch!r}, expected one of "
            f"{sorted(ARCHITECTURES)}. {_RECREATE_HINT}")
    found_k = metadata.get("k")
    if found_k is not None and (isinstance(found_k, bool) or not isinstance(found_k, int)
                                or found_k < 0):
        raise ModelFileError(
            f"{path}: the metadata has k = {found_k!r}, expected a non-negative integer or "
            f"null (full precision). {_RECREATE_HINT}")
    names = sorted(name for name in archive.files if name.startswith("param_"))
    params = [np.asarray(archive[name], dtype=np.float32) for name in names]
    return Model(params=params, metadata=metadata, path=path)


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
            f"for {arch.name}")
    for value, (name, shape) in zip(params, expected):
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise ModelFileError(
                f"{path}: parameter {name} has shape {tuple(value.shape)}, "
                f"expected {tuple(shape)} for {arch.name}")
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
