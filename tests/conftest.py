"""Fixtures shared by several test files."""

import os
import subprocess

import pytest


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
