"""Tests for ann2snn.data: look-up order, copying, download fallback and the IDX reader.

Small IDX files are written into tmp_path by `write_idx`. The real-data tests read
the files that Debian's dataset-fashion-mnist package installs, and are skipped if
that package is missing. No test uses the network: the download tests replace the
tensorlayer module with a stub.
"""

import errno
import gzip
import os
import shutil
import struct
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from ann2snn import data
from ann2snn.data import (
    FILE_NAMES,
    INSTALL_HINT,
    SYSTEM_DATA_DIR,
    VALIDATION_SIZE,
    DataError,
    find_data_files,
    load_fashion_mnist,
    load_test_set,
    read_idx_images,
    read_idx_labels,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

requires_real_data = pytest.mark.skipif(
    not all((Path(SYSTEM_DATA_DIR) / name).is_file() for name in FILE_NAMES.values()),
    reason=f"Fashion-MNIST not installed in {SYSTEM_DATA_DIR} ({INSTALL_HINT})",
)


def write_idx(path, array, magic=None):
    """Write a uint8 array as a gzip-compressed IDX file. The default magic is 0x08 << 8 | ndim."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())
    return path


def random_images(count, rows=28, cols=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, rows, cols), dtype=np.uint8)


def random_labels(count, seed=0):
    return np.random.default_rng(seed).integers(0, 10, size=count, dtype=np.uint8)


def write_dataset(folder, test_images=None, test_labels=None, skip=()):
    """Write four small IDX files into folder, leaving out the keys in skip.

    The training files contain 3 images. The test files contain test_images and test_labels,
    by default 5 random images and labels.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": random_images(3, seed=1),
        "train_labels": random_labels(3, seed=1),
        "test_images": random_images(5) if test_images is None else test_images,
        "test_labels": random_labels(5) if test_labels is None else test_labels,
    }
    for key, array in arrays.items():
        if key not in skip:
            write_idx(folder / FILE_NAMES[key], array)
    return folder


def install_fake_tensorlayer(monkeypatch, download):
    """Make `import tensorlayer` return a stub whose load_fashion_mnist_dataset calls download."""
    calls = []

    def load_fashion_mnist_dataset(shape, path):
        calls.append({"shape": shape, "path": path})
        return download(shape=shape, path=path)

    files = types.SimpleNamespace(load_fashion_mnist_dataset=load_fashion_mnist_dataset)
    monkeypatch.setitem(sys.modules, "tensorlayer", types.SimpleNamespace(files=files))
    return calls


def raise_offline_error(shape, path):
    raise urllib.error.URLError(OSError(errno.ENETUNREACH, "Network is unreachable"))


# Real data


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("real_data")
    return load_fashion_mnist(data_dir=str(data_dir), download=False)


@pytest.fixture(scope="module")
def real_train_images():
    return read_idx_images(os.path.join(SYSTEM_DATA_DIR, FILE_NAMES["train_images"]))


@requires_real_data
def test_real_data_split_shapes(real_dataset):
    assert real_dataset.x_train.shape == (50000, 28, 28, 1)
    assert real_dataset.x_val.shape == (10000, 28, 28, 1)
    assert real_dataset.x_test.shape == (10000, 28, 28, 1)
    assert real_dataset.y_train.shape == (50000,)
    assert real_dataset.y_val.shape == (10000,)
    assert real_dataset.y_test.shape == (10000,)


@requires_real_data
def test_real_data_dtypes(real_dataset):
    for images in (real_dataset.x_train, real_dataset.x_val, real_dataset.x_test):
        assert images.dtype == np.float32
    for labels in (real_dataset.y_train, real_dataset.y_val, real_dataset.y_test):
        assert labels.dtype == np.int64


@requires_real_data
def test_real_pixels_below_one(real_dataset):
    assert real_dataset.x_train.max() < 1.0
    assert real_dataset.x_train.max() == np.float32(255 / 256)
    assert real_dataset.x_train.min() == 0.0


@requires_real_data
def test_real_pixels_are_uint8_over_256(real_dataset, real_train_images):
    expected_train = real_train_images[:50000, :, :, None].astype(np.float32) / np.float32(256)
    np.testing.assert_array_equal(real_dataset.x_train, expected_train)

    raw_test = read_idx_images(os.path.join(SYSTEM_DATA_DIR, FILE_NAMES["test_images"]))
    np.testing.assert_array_equal(real_dataset.x_test * 256, raw_test[:, :, :, None])


@requires_real_data
def test_validation_is_last_training_images(real_dataset, real_train_images):
    raw_labels = read_idx_labels(os.path.join(SYSTEM_DATA_DIR, FILE_NAMES["train_labels"]))
    assert VALIDATION_SIZE == 10000
    last_images = real_train_images[-VALIDATION_SIZE:]
    np.testing.assert_array_equal(real_dataset.x_val[:, :, :, 0] * 256, last_images)
    np.testing.assert_array_equal(real_dataset.y_val, raw_labels[-VALIDATION_SIZE:])
    np.testing.assert_array_equal(real_dataset.y_train, raw_labels[:-VALIDATION_SIZE])


@requires_real_data
def test_real_data_source_is_copy(real_dataset):
    source = Path(real_dataset.source)
    assert source.name == "fashion_mnist"
    for name in FILE_NAMES.values():
        assert (source / name).read_bytes() == (Path(SYSTEM_DATA_DIR) / name).read_bytes()


@requires_real_data
def test_load_test_set_reads_copied_files(tmp_path):
    system_dir = tmp_path / "system"
    system_dir.mkdir()
    for name in FILE_NAMES.values():
        (system_dir / name).symlink_to(Path(SYSTEM_DATA_DIR) / name)

    x_test, y_test = load_test_set(str(tmp_path / "data"), str(system_dir), download=False)

    copied = tmp_path / "data" / "fashion_mnist" / FILE_NAMES["test_images"]
    assert copied.is_file()
    assert not copied.is_symlink()
    assert x_test.shape == (10000, 28, 28, 1)
    assert y_test.shape == (10000,)
    raw_test = read_idx_images(os.path.join(SYSTEM_DATA_DIR, FILE_NAMES["test_images"]))
    np.testing.assert_array_equal(x_test[:, :, :, 0] * 256, raw_test)


# Look-up order and copying


def test_local_folder_used_first(tmp_path):
    local_dir = write_dataset(tmp_path / "data" / "fashion_mnist")
    write_dataset(tmp_path / "data")
    system_dir = write_dataset(tmp_path / "system")

    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert found == str(local_dir)


def test_data_dir_with_files_accepted(tmp_path):
    write_dataset(tmp_path / "data")

    found = find_data_files(str(tmp_path / "data"), system_dir=None, download=False)

    assert found == str(tmp_path / "data")


def test_system_files_copied_to_data_dir(tmp_path):
    system_dir = write_dataset(tmp_path / "system")
    local_dir = tmp_path / "data" / "fashion_mnist"

    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert found == str(local_dir)
    assert sorted(os.listdir(local_dir)) == sorted(FILE_NAMES.values())
    for name in FILE_NAMES.values():
        assert (local_dir / name).read_bytes() == (system_dir / name).read_bytes()


def test_copy_permission_error_reads_system_dir(tmp_path, monkeypatch):
    system_dir = write_dataset(tmp_path / "system")

    def copy_without_permission(source, target):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(shutil, "copyfileobj", copy_without_permission)
    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert found == str(system_dir)
    assert os.listdir(tmp_path / "data" / "fashion_mnist") == []


def test_uncreatable_data_dir_reads_system_dir(tmp_path):
    system_dir = write_dataset(tmp_path / "system")
    data_dir = tmp_path / "not_a_folder"
    data_dir.write_text("a regular file")

    assert find_data_files(str(data_dir), str(system_dir), download=False) == str(system_dir)


def test_failed_copy_leaves_no_partial_file(tmp_path, monkeypatch):
    system_dir = write_dataset(tmp_path / "system")
    local_dir = tmp_path / "data" / "fashion_mnist"
    failing_name = FILE_NAMES["train_labels"]
    real_copyfileobj = shutil.copyfileobj
    names_during_copy = []

    def copy_until_disk_full(source, target):
        if os.path.basename(source.name) == failing_name:
            target.write(source.read(10))
            target.flush()
            names_during_copy.extend(os.listdir(local_dir))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_copyfileobj(source, target)

    monkeypatch.setattr(shutil, "copyfileobj", copy_until_disk_full)
    found = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    assert len(names_during_copy) == 2
    assert failing_name not in names_during_copy
    assert found == str(system_dir)
    assert os.listdir(local_dir) == [FILE_NAMES["train_images"]]
    name = FILE_NAMES["train_images"]
    assert (local_dir / name).read_bytes() == (system_dir / name).read_bytes()


def test_copied_files_readable_by_others(tmp_path):
    system_dir = write_dataset(tmp_path / "system")
    for name in FILE_NAMES.values():
        os.chmod(system_dir / name, 0o644)

    local_dir = find_data_files(str(tmp_path / "data"), str(system_dir), download=False)

    for name in FILE_NAMES.values():
        assert os.stat(os.path.join(local_dir, name)).st_mode & 0o777 == 0o644


# Download fallback and not-found errors


def test_download_failure_names_paths_and_fix(tmp_path, monkeypatch):
    install_fake_tensorlayer(monkeypatch, raise_offline_error)
    data_dir = tmp_path / "data"
    system_dir = tmp_path / "no_system"

    with pytest.raises(DataError) as raised:
        find_data_files(str(data_dir), str(system_dir))

    message = str(raised.value)
    assert f"{data_dir / 'fashion_mnist'}: folder not found" in message
    assert f"{system_dir}: folder not found" in message
    assert f"download into {data_dir / 'fashion_mnist'}: failed with URLError" in message
    assert "Network is unreachable" in message
    assert INSTALL_HINT in message
    assert "--data_dir" in message


def test_download_uses_tensorlayer_layout(tmp_path, monkeypatch):
    def download_small_files(shape, path):
        write_dataset(Path(path) / "fashion_mnist")

    calls = install_fake_tensorlayer(monkeypatch, download_small_files)
    data_dir = str(tmp_path / "data")

    found = find_data_files(data_dir, str(tmp_path / "no_system"))

    assert found == os.path.join(data_dir, "fashion_mnist")
    assert calls == [{"shape": (-1, 28, 28, 1), "path": data_dir}]


def test_download_incomplete_names_missing_file(tmp_path, monkeypatch):
    def download_three_files(shape, path):
        write_dataset(Path(path) / "fashion_mnist", skip=("test_images",))

    install_fake_tensorlayer(monkeypatch, download_three_files)

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(tmp_path / "no_system"))

    local_dir = tmp_path / "data" / "fashion_mnist"
    assert f"finished, but {local_dir}: missing t10k-images-idx3-ubyte.gz" in str(raised.value)


def test_download_disabled_skips_tensorlayer(tmp_path, monkeypatch):
    calls = install_fake_tensorlayer(monkeypatch, raise_offline_error)

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(tmp_path / "no_system"), download=False)

    assert calls == []
    assert "download=False" in str(raised.value)


def test_missing_local_file_named(tmp_path):
    write_dataset(tmp_path / "data" / "fashion_mnist", skip=("test_labels",))

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(tmp_path / "no_system"), download=False)

    expected = f"{tmp_path / 'data' / 'fashion_mnist'}: missing t10k-labels-idx1-ubyte.gz\n"
    assert expected in str(raised.value)


def test_partial_system_dir_not_copied(tmp_path):
    write_dataset(tmp_path / "system", skip=("train_images",))

    with pytest.raises(DataError) as raised:
        find_data_files(str(tmp_path / "data"), str(tmp_path / "system"), download=False)

    assert f"{tmp_path / 'system'}: missing train-images-idx3-ubyte.gz" in str(raised.value)
    assert not (tmp_path / "data" / "fashion_mnist").exists()


# IDX reader


def test_reader_round_trip(tmp_path):
    images = random_images(4, rows=3, cols=5)
    labels = random_labels(4)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", labels)

    read_images = read_idx_images(tmp_path / "images.gz")
    read_labels = read_idx_labels(tmp_path / "labels.gz")

    assert read_images.dtype == np.uint8
    assert read_labels.dtype == np.uint8
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_images.flags.writeable


def test_truncated_gzip_names_file(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", random_images(20))
    compressed = path.read_bytes()
    path.write_bytes(compressed[: len(compressed) // 2])

    with pytest.raises(DataError, match="ends early") as raised:
        read_idx_images(path)

    assert str(path) in str(raised.value)
    assert "truncated" in str(raised.value)


def test_not_gzip_names_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2049, 3) + bytes([1, 2, 3]))

    with pytest.raises(DataError) as raised:
        read_idx_labels(path)

    assert str(path) in str(raised.value)
    assert "is not a valid gzip file" in str(raised.value)


def test_corrupt_deflate_names_file(tmp_path):
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    reserved_block_type = b"\x07"
    path = tmp_path / "corrupt.gz"
    path.write_bytes(gzip_header + reserved_block_type + bytes(20))

    with pytest.raises(DataError) as raised:
        read_idx_images(path)

    assert str(path) in str(raised.value)
    assert "gzip decompression failed" in str(raised.value)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"

    with pytest.raises(DataError) as raised:
        read_idx_labels(path)

    assert f"{path} not found" in str(raised.value)


def test_short_header_names_file(tmp_path):
    path = tmp_path / "empty.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"\x00\x00\x08")

    with pytest.raises(DataError) as raised:
        read_idx_images(path)

    assert str(path) in str(raised.value)
    assert "decompresses to 3 bytes, fewer than the 16-byte header" in str(raised.value)


@pytest.mark.parametrize(
    ("reader", "array", "found", "expected"),
    [
        (read_idx_images, random_labels(4), 2049, 2051),
        (read_idx_labels, random_images(4), 2051, 2049),
    ],
    ids=["images_reader_given_labels", "labels_reader_given_images"],
)
def test_wrong_magic_names_found_and_expected(tmp_path, reader, array, found, expected):
    path = write_idx(tmp_path / "swapped.gz", array)

    with pytest.raises(DataError) as raised:
        reader(path)

    assert str(path) in str(raised.value)
    assert f"magic number {found}, expected {expected}" in str(raised.value)


def test_payload_shorter_than_header_says(tmp_path):
    path = tmp_path / "short.gz"
    header = struct.pack(">IIII", 2051, 5, 28, 28)
    with gzip.open(path, "wb") as stream:
        stream.write(header + random_images(3).tobytes())

    with pytest.raises(DataError) as raised:
        read_idx_images(path)

    message = str(raised.value)
    assert f"{path} is truncated" in message
    assert "5 x 28 x 28 = 3920 bytes" in message
    assert "contains 2352" in message


def test_payload_longer_than_header_says(tmp_path):
    path = tmp_path / "long.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">II", 2049, 3) + bytes([1, 2, 3, 4]))

    with pytest.raises(DataError) as raised:
        read_idx_labels(path)

    assert f"{path} has trailing data" in str(raised.value)
    assert "3 = 3 bytes of label data, but the file contains 4" in str(raised.value)


# Data set checks


def test_image_size_not_28_names_file(tmp_path):
    small_images = random_images(5, rows=14, cols=14)
    folder = write_dataset(tmp_path / "data" / "fashion_mnist", test_images=small_images)

    with pytest.raises(DataError) as raised:
        load_test_set(str(tmp_path / "data"), system_dir=None, download=False)

    assert str(folder / FILE_NAMES["test_images"]) in str(raised.value)
    assert "contains 14x14 images, expected 28x28" in str(raised.value)


def test_count_mismatch_names_both_files(tmp_path):
    folder = write_dataset(
        tmp_path / "data" / "fashion_mnist", test_images=random_images(5), test_labels=random_labels(4)
    )

    with pytest.raises(DataError) as raised:
        load_test_set(str(tmp_path / "data"), system_dir=None, download=False)

    message = str(raised.value)
    assert f"{folder / FILE_NAMES['test_images']} contains 5 images" in message
    assert f"{folder / FILE_NAMES['test_labels']} contains 4 labels" in message


def test_test_set_size_found_and_expected(tmp_path):
    write_dataset(tmp_path / "data" / "fashion_mnist")

    with pytest.raises(DataError) as raised:
        load_test_set(str(tmp_path / "data"), system_dir=None, download=False)

    assert "contains 5 images, expected 10000 for the Fashion-MNIST test set" in str(raised.value)


def test_train_set_size_found_and_expected(tmp_path):
    write_dataset(tmp_path / "data" / "fashion_mnist")

    with pytest.raises(DataError) as raised:
        load_fashion_mnist(str(tmp_path / "data"), system_dir=None, download=False)

    assert "contains 3 images, expected 60000 for the Fashion-MNIST train set" in str(raised.value)


def test_label_out_of_range_names_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "TEST_SIZE", 5)
    labels = np.array([0, 1, 12, 3, 4], dtype=np.uint8)
    folder = write_dataset(tmp_path / "data" / "fashion_mnist", test_labels=labels)

    with pytest.raises(DataError) as raised:
        load_test_set(str(tmp_path / "data"), system_dir=None, download=False)

    labels_path = folder / FILE_NAMES["test_labels"]
    assert f"{labels_path} contains label 12, expected labels 0 to 9" in str(raised.value)


# Import cost


def test_module_does_not_import_tensorflow():
    check = (
        "import sys, ann2snn.data; "
        "print(sorted({'tensorflow', 'tensorlayer'} & set(sys.modules)))"
    )

    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "[]"
