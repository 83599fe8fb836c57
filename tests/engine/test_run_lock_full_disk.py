"""A full disk as a run takes its output folder's lock: one error naming the lock file, the lock released (a
rerun after freeing space takes it), and nothing else written into the folder."""
import errno
import io
import os

import pytest

from spcl.utils import run_lock as run_lock_module
from spcl.utils.run_lock import LOCK, held_by, run_lock


class _FullDisk(io.FileIO):
    """A file on a full disk: every write fails with ENOSPC."""

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _open_on_a_full_disk(path, mode="r", *args, **kwargs):
    assert mode == "a+", mode
    return io.TextIOWrapper(io.BufferedRandom(_FullDisk(path, mode)))


def test_a_full_disk_names_the_lock_file_and_releases_it(tmp_path, monkeypatch):
    folder = str(tmp_path / "run")
    path = os.path.join(folder, LOCK)
    with monkeypatch.context() as full:
        full.setattr(run_lock_module, "open", _open_on_a_full_disk, raising=False)
        with pytest.raises(OSError) as raised:
            with run_lock(folder):
                pytest.fail("the block ran without the holder line written")
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.strerror == (f"cannot write lock file {path}: No space left on device (disk full or quota "
                                     "reached?); nothing else was written")
    assert held_by(folder) == ""  # released: no handle left holding it
    assert os.listdir(folder) == [LOCK]
    with run_lock(folder):  # space freed: the rerun takes the folder
        with open(path) as f:
            assert f.read().startswith(f"pid {os.getpid()} on ")
