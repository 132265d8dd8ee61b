"""Fashion-MNIST loading with a validating reader for the gzip-compressed IDX files.

`find_data_files` looks for a folder that contains all four files, in this order:

1. ``<data_dir>/fashion_mnist/``, the folder that TensorLayer downloads into, then
   ``<data_dir>`` itself, so that ``--data_dir`` may also point straight at the files.
2. ``system_dir``, by default where Debian's dataset-fashion-mnist package installs
   them. The files missing from ``<data_dir>/fashion_mnist/`` are copied there, or into
   ``<data_dir>`` if only that folder contains some of the four. When that folder
   contained none of them and cannot be written, the files are read from ``system_dir``.
3. If ``download`` is true, TensorLayer's ``load_fashion_mnist_dataset``, which
   downloads the missing files into ``<data_dir>/fashion_mnist/``.

A file that exists when the folders are checked is never replaced. A folder with some of
the four files is completed instead, so that the files the user put there are read. If
both folders contain some, or the missing files cannot be copied or downloaded,
DataError names the folder, the files it contains and the files it lacks. If all steps
fail, DataError lists every path tried and how to get the data. The files are always
parsed by this module's own reader, which raises DataError naming the file for any
invalid content.

This module imports neither TensorFlow nor TensorLayer at module level, because the
spiking scripts import it and must start fast. TensorLayer is imported only for the
download.
"""

import gzip
import logging
import math
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np

SYSTEM_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VALIDATION_SIZE = 10000
INSTALL_HINT = "sudo apt-get install dataset-fashion-mnist"

TRAIN_SIZE = 60000
TEST_SIZE = 10000
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049

TENSORLAYER_SUBFOLDER = "fashion_mnist"

_GET_DATA_HINT = (
    f"To get the data, run `{INSTALL_HINT}`, or pass --data_dir DIR where DIR or "
    f"DIR/{TENSORLAYER_SUBFOLDER} contains the four files {', '.join(FILE_NAMES.values())}."
)
_REPLACE_FILE_HINT = ("Delete the file and run the command again, which copies it anew from the "
                      "system copy or downloads it, or replace it with an intact copy.")

logger = logging.getLogger(__name__)


class DataError(Exception):
    """Missing or invalid Fashion-MNIST files. The message names the file and the fix."""


@dataclass
class Dataset:
    """Fashion-MNIST split into training, validation and test sets.

    Images are float32 arrays of shape (N, 28, 28, 1) with values uint8 / 256, the
    scaling TensorLayer uses, so the maximum is 255/256. Labels are int64 arrays of
    shape (N,). The validation set is the last VALIDATION_SIZE training images.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def find_data_files(data_dir="./data", system_dir=SYSTEM_DATA_DIR, download=True):
    """Return a folder that contains all four Fashion-MNIST files, copying or downloading them.

    The look-up order is in the module docstring. Pass ``system_dir=None`` to skip
    the system folder. Raises DataError when no folder contains all four files.
    """
    if not str(data_dir).strip():
        raise DataError(f"invalid data folder {str(data_dir)!r}: the path is empty. Pass the "
                        f"folder of Fashion-MNIST, such as ./data")
    local_dir = os.path.join(data_dir, TENSORLAYER_SUBFOLDER)
    attempts = []

    for folder in (local_dir, data_dir):
        missing = _missing_files(folder)
        if not missing:
            return folder
        attempts.append(_describe_missing(folder, missing))

    target = _folder_to_complete(local_dir, data_dir)
    missing = _missing_files(target)

    if system_dir:
        if all(os.path.isfile(os.path.join(system_dir, name)) for name in missing):
            return _copy_system_files(system_dir, target, missing)
        attempts.append(_describe_missing(system_dir, _missing_files(system_dir)))

    if not download:
        attempts.append("download: skipped because download=False")
    elif target != local_dir:
        attempts.append(f"download: skipped because TensorLayer downloads into {local_dir}, "
                        f"so the files in {data_dir} would not be read")
    else:
        download_error = _download_with_tensorlayer(data_dir)
        missing = _missing_files(local_dir)
        if not missing:
            return local_dir
        if download_error is None:
            outcome = f"finished, but {_describe_missing(local_dir, missing)}"
        else:
            outcome = f"failed with {type(download_error).__name__}: {download_error}"
        attempts.append(f"download into {local_dir}: {outcome}")

    tried = "\n".join(f"  - {attempt}" for attempt in attempts)
    message = f"Fashion-MNIST files not found. Tried:\n{tried}\n"
    present = _present_files(target)
    if present:
        message += (f"{_describe_contents(target)}, and files that exist are never replaced, "
                    f"so add the missing files to {target}. ")
    raise DataError(message + _GET_DATA_HINT)


def load_fashion_mnist(data_dir="./data", system_dir=SYSTEM_DATA_DIR, download=True):
    """Find, read and validate Fashion-MNIST, and return it as a Dataset.

    The training set is the first 50,000 of the 60,000 training images, and the
    validation set is the last VALIDATION_SIZE. Raises DataError.
    """
    folder = find_data_files(data_dir, system_dir, download)
    x_all, y_all = _load_split(folder, "train", TRAIN_SIZE)
    x_test, y_test = _load_split(folder, "test", TEST_SIZE)

    split = TRAIN_SIZE - VALIDATION_SIZE
    return Dataset(
        x_train=x_all[:split],
        y_train=y_all[:split],
        x_val=x_all[split:],
        y_val=y_all[split:],
        x_test=x_test,
        y_test=y_test,
        source=folder,
    )


def load_test_set(data_dir="./data", system_dir=SYSTEM_DATA_DIR, download=True):
    """Find Fashion-MNIST and return (x_test, y_test), reading only the two test files.

    The arrays have the same dtype, shape and scaling as in Dataset. Raises DataError.
    """
    folder = find_data_files(data_dir, system_dir, download)
    return _load_split(folder, "test", TEST_SIZE)


def read_idx_images(path):
    """Read a gzip-compressed IDX image file into a uint8 array of shape (N, rows, cols).

    Raises DataError naming the file if it is not valid gzip, is truncated, has a
    magic number other than 2051, or its size does not match its header.
    """
    return _read_idx(path, IMAGE_MAGIC, "image", num_dims=3)


def read_idx_labels(path):
    """Read a gzip-compressed IDX label file into a uint8 array of shape (N,).

    Raises DataError naming the file if it is not valid gzip, is truncated, has a
    magic number other than 2049, or its size does not match its header.
    """
    return _read_idx(path, LABEL_MAGIC, "label", num_dims=1)


def _missing_files(folder):
    return [name for name in FILE_NAMES.values() if not os.path.isfile(os.path.join(folder, name))]


def _present_files(folder):
    return [name for name in FILE_NAMES.values() if os.path.isfile(os.path.join(folder, name))]


def _describe_contents(folder):
    """Return "<folder> contains A, B but not C, D" for a folder with some of the four files."""
    return (f"{folder} contains {', '.join(_present_files(folder))} but not "
            f"{', '.join(_missing_files(folder))}")


def _folder_to_complete(local_dir, data_dir):
    """Return the folder that the missing files are copied or downloaded into.

    That is the one of local_dir and data_dir that contains some of the four files, so
    that they are read together with the copied ones, or local_dir when neither does.
    Raises DataError when both contain some, because it is unclear which set to complete.
    """
    partial = [folder for folder in (local_dir, data_dir) if _present_files(folder)]
    if len(partial) == 2:
        raise DataError(
            f"Fashion-MNIST is incomplete in two folders: {_describe_contents(local_dir)}, "
            f"and {_describe_contents(data_dir)}. Move all four files into one of the two "
            f"folders, then run the command again. {_GET_DATA_HINT}")
    return partial[0] if partial else local_dir


def _describe_missing(folder, missing):
    if not os.path.isdir(folder):
        return f"{folder}: folder not found"
    if len(missing) == len(FILE_NAMES):
        return f"{folder}: contains none of the four files"
    return f"{folder}: missing {', '.join(missing)}"


def _copy_system_files(system_dir, target, names):
    """Copy the files `names`, which target lacks, from system_dir and return the folder to read.

    Each file is written under a temporary name and then renamed, so an interrupted
    copy never leaves a partial file under the final name. If target contains none of
    the four files and cannot be created or written, the files are read from system_dir
    instead. If it contains some, a failed copy raises DataError, because reading
    system_dir would silently ignore them.
    """
    present = _present_files(target)
    for name in names:
        path = os.path.join(target, name)
        if os.path.lexists(path):
            raise DataError(
                f"{path} exists but is not a file (for example a folder or a broken symbolic "
                f"link), so Fashion-MNIST cannot be copied there. Move it away or replace it "
                f"with the file {os.path.join(system_dir, name)}, then run the command again.")

    try:
        os.makedirs(target, exist_ok=True)
        for name in names:
            # NOTE: a file created under this name after the check above is still replaced.
            _copy_file_atomically(os.path.join(system_dir, name), os.path.join(target, name))
    except OSError as error:
        if present:
            raise DataError(
                f"Copying the missing Fashion-MNIST files from {system_dir} into {target} "
                f"failed ({error}). {_describe_contents(target)}. Add the missing files "
                f"there, or make the folder writable, then run the command again."
            ) from error
        logger.warning(
            "Copying Fashion-MNIST into %s failed (%s). Reading it from %s instead.",
            target,
            error,
            system_dir,
        )
        return system_dir

    if present:
        logger.info("Copied %s from %s into %s and kept the files it already contained: %s",
                    ", ".join(names), system_dir, target, ", ".join(present))
    else:
        logger.info("Copied Fashion-MNIST from %s to %s", system_dir, target)
    return target


def _copy_file_atomically(source, target):
    folder, name = os.path.split(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as output, open(source, "rb") as input_file:
            shutil.copyfileobj(input_file, output)
        shutil.copymode(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _download_with_tensorlayer(data_dir):
    """Download the missing files into <data_dir>/fashion_mnist/ and return the error, if any.

    Any exception is caught and returned, because the download fails in many ways:
    ImportError without TensorLayer, URLError or another OSError when offline, and
    EOFError or ValueError when TensorLayer parses a partially downloaded file.
    """
    target = os.path.join(data_dir, TENSORLAYER_SUBFOLDER)
    logger.info("Downloading Fashion-MNIST into %s with TensorLayer", target)
    try:
        import tensorlayer as tl

        tl.files.load_fashion_mnist_dataset(shape=(-1, *IMAGE_SIZE, 1), path=data_dir)
    except Exception as error:
        logger.warning("Fashion-MNIST download failed: %s: %s", type(error).__name__, error)
        return error
    return None


def _load_split(folder, split, expected_count):
    """Read and check one split ("train" or "test") and return scaled images and labels."""
    images_path = os.path.join(folder, FILE_NAMES[f"{split}_images"])
    labels_path = os.path.join(folder, FILE_NAMES[f"{split}_labels"])
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)

    if images.shape[1:] != IMAGE_SIZE:
        raise DataError(
            f"{images_path} contains {images.shape[1]}x{images.shape[2]} images, "
            f"expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}. {_REPLACE_FILE_HINT}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} contains {len(images)} images but {labels_path} contains "
            f"{len(labels)} labels, so the two files do not belong together. "
            f"Replace them with intact copies. {_GET_DATA_HINT}"
        )
    if len(images) != expected_count:
        raise DataError(
            f"{images_path} contains {len(images)} images, expected {expected_count} "
            f"for the Fashion-MNIST {split} set. {_REPLACE_FILE_HINT}"
        )
    if labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{labels_path} contains label {labels.max()}, expected labels 0 to "
            f"{NUM_CLASSES - 1}. {_REPLACE_FILE_HINT}"
        )

    x = (images.astype(np.float32) / np.float32(256)).reshape(-1, *IMAGE_SIZE, 1)
    y = labels.astype(np.int64)
    return x, y


def _read_idx(path, expected_magic, kind, num_dims):
    """Parse one gzip-compressed IDX file of unsigned bytes and return it as a writable array."""
    data = _decompress(path)

    # The magic number is checked before the header length, so that a label file
    # passed as images is reported as the wrong kind rather than as truncated.
    if len(data) >= 4:
        (magic,) = struct.unpack(">I", data[:4])
        if magic != expected_magic:
            raise DataError(
                f"{path} has magic number {magic}, expected {expected_magic} for an IDX "
                f"{kind} file. {_REPLACE_FILE_HINT}"
            )

    header_size = 4 * (1 + num_dims)
    if len(data) < header_size:
        raise DataError(
            f"{path} is truncated: it decompresses to {len(data)} bytes, fewer than the "
            f"{header_size}-byte header of an IDX {kind} file. {_REPLACE_FILE_HINT}"
        )

    dims = struct.unpack(f">{num_dims}I", data[4:header_size])

    expected_bytes = math.prod(dims)
    payload_bytes = len(data) - header_size
    if payload_bytes != expected_bytes:
        problem = "is truncated" if payload_bytes < expected_bytes else "has trailing data"
        raise DataError(
            f"{path} {problem}: its header declares {' x '.join(map(str, dims))} "
            f"= {expected_bytes} bytes of {kind} data, but the file contains {payload_bytes}. "
            f"{_REPLACE_FILE_HINT}"
        )

    array = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    return array.reshape(dims).copy()


def _decompress(path):
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise DataError(f"{path} not found. {_GET_DATA_HINT}") from error
    except gzip.BadGzipFile as error:
        raise DataError(
            f"{path} is not a valid gzip file ({error}). {_REPLACE_FILE_HINT}"
        ) from error
    except EOFError as error:
        raise DataError(
            f"{path} is truncated: the gzip stream ends early ({error}). {_REPLACE_FILE_HINT}"
        ) from error
    except zlib.error as error:
        raise DataError(
            f"{path} is corrupt: gzip decompression failed ({error}). {_REPLACE_FILE_HINT}"
        ) from error
    except PermissionError as error:
        raise DataError(
            f"Reading {path} failed: {error}. Make the file readable for this user (for "
            f"example with chmod a+r {path}), then run the command again."
        ) from error
    except OSError as error:
        raise DataError(f"Reading {path} failed: {error}. {_REPLACE_FILE_HINT}") from error
