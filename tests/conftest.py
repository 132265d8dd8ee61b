"""Fixtures shared by several test files."""

import os
import shutil
import subprocess

import pytest

from ann2snn.data import DataError, find_data_files


@pytest.fixture
def read_only_folder(tmp_path):
    """Return a folder that this process cannot write to, as root too (immutable)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept\n")
    if os.geteuid() == 0:
        chattr = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if chattr.returncode != 0:
            pytest.skip(f"chattr +i failed here: {chattr.stderr.decode().strip()}")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory):
    """Return a --data_dir with the four real Fashion-MNIST files, or skip the test without them.

    The files are copied from ann2snn.data.SYSTEM_DATA_DIR into a temporary folder,
    so that no test writes into the repository's data/.
    """
    folder = tmp_path_factory.mktemp("fashion_mnist")
    try:
        find_data_files(str(folder), download=False)
    except DataError as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    return folder


@pytest.fixture(scope="session")
def perf_recording():
    """Skip the test unless `perf record` works here: perf is installed and may profile."""
    if shutil.which("perf") is None:
        pytest.skip("perf is not installed")
    completed = subprocess.run(["perf", "record", "-o", os.devnull, "--", "true"],
                               capture_output=True)
    if completed.returncode != 0:
        pytest.skip("perf is not permitted to record here")
