"""spcl.utils.io's small file helpers: an atomic write puts its data on the disk (flushed, fsynced) before the
rename makes it the file, gives the file the user's umask permissions, and on a failure keeps the previous file,
removes its temp file and raises one OSError naming the path; temp files left by dead writers are cleaned up; and
the path helpers the tools' messages rely on."""
import errno
import json
import math
import os
import stat
import subprocess
import sys

import pytest

from spcl.utils import io as io_mod
from spcl.utils.io import atomic_write, inside, number, read_json, remove_temp_files, space_hint, where_read


def _dead_pid() -> int:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(gone.stdout)


def test_the_data_is_flushed_and_fsynced_into_the_temp_file_before_the_rename(tmp_path, monkeypatch):
    """Without the fsync a power cut after the rename can leave an empty `path`; without the flush the fsync
    would sync a file Python's buffer has not written yet."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, st.st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino, os.path.basename(src), dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = str(tmp_path / "model.pth")
    atomic_write(path, lambda f: f.write(b"x" * 100))
    assert [e[0] for e in events] == ["fsync", "replace"]
    (_, synced, size), (_, renamed, name, dst) = events
    assert synced == renamed and size == 100 and dst == path  # the whole data, in the file that becomes `path`
    assert name.startswith(f".tmp_{os.getpid()}_") and name.endswith(".pth")  # TEMP_PREFIX + the writer's pid
    assert open(path, "rb").read() == b"x" * 100 and os.listdir(tmp_path) == ["model.pth"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_written_file_gets_the_permissions_of_a_plain_open_and_the_umask_stays(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write(str(tmp_path / "a.json"), lambda f: f.write("{}"), binary=False)
        with open(tmp_path / "b.json", "w") as f:  # what a plain open() gives
            f.write("{}")
        assert os.umask(mask) == mask  # reading the umask did not change it
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, " (disk full or quota reached?)"),
                                        (errno.EDQUOT, " (disk full or quota reached?)"),
                                        (errno.EFBIG, " (disk full or quota reached?)"),
                                        (errno.EACCES, "")])
def test_a_failed_write_names_the_path_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, code, hint):
    path = str(tmp_path / "metrics.json")
    with open(path, "w") as f:
        f.write("previous")

    def fails(f):
        f.write("partial")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError) as raised:
        atomic_write(path, fails, binary=False, what="record")
    assert raised.value.errno == code and space_hint(code) == hint
    assert str(raised.value.strerror) == (f"cannot write record {path}: {os.strerror(code)}{hint}; the previous "
                                          "file there, if any, is intact")
    assert open(path).read() == "previous" and os.listdir(tmp_path) == ["metrics.json"]


def test_an_os_error_behind_another_error_is_found_through_its_cause(tmp_path):
    """`raise … from` outside an `except` block sets only __cause__ (no __context__)."""
    path = str(tmp_path / "model.pth")
    cause = OSError(errno.ENOSPC, "No space left on device")

    def fails(f):
        raise RuntimeError("unexpected pos 1 vs 0") from cause

    with pytest.raises(OSError) as raised:
        atomic_write(path, fails, what="checkpoint")
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value.__cause__, RuntimeError)
    assert raised.value.strerror.startswith(f"cannot write checkpoint {path}: No space left on device ")
    assert os.listdir(tmp_path) == []


def test_temp_files_of_dead_writers_go_in_the_folder_or_below_it(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    (tmp_path / "sub").mkdir()
    for name in (f".tmp_{dead}_a.pth", f".tmp_{live}_b.pth", "sub/" + f".tmp_{dead}_c.pth", "keep.pth"):
        (tmp_path / name).write_text("x")
    assert remove_temp_files(str(tmp_path)) == 1  # this folder only, the live writer's file kept
    assert sorted(os.listdir(tmp_path)) == [f".tmp_{live}_b.pth", "keep.pth", "sub"]
    assert os.listdir(tmp_path / "sub") == [f".tmp_{dead}_c.pth"]
    assert remove_temp_files(str(tmp_path), recursive=True) == 1
    assert os.listdir(tmp_path / "sub") == []
    assert remove_temp_files(str(tmp_path), live_writers=True) == 1  # a folder only the caller writes
    assert sorted(os.listdir(tmp_path)) == ["keep.pth", "sub"]
    assert remove_temp_files(str(tmp_path / "missing")) == 0


def test_a_temp_file_of_another_users_process_is_kept(tmp_path, monkeypatch):
    """os.kill(pid, 0) on another user's live process raises PermissionError: it is alive."""
    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(io_mod.os, "kill", kill)
    (tmp_path / ".tmp_4242_a.pth").write_text("x")
    assert remove_temp_files(str(tmp_path)) == 0
    assert os.listdir(tmp_path) == [".tmp_4242_a.pth"]


def test_where_read_names_the_current_directory_for_a_relative_path_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert where_read("configs/x.yaml") == f", read relative to the current directory {tmp_path}"
    assert where_read(str(tmp_path / "x.yaml")) == ""
    assert where_read("") == ""


def test_inside_compares_whole_path_components(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert inside("/a/b", "/a/b") and inside("/a/b/c", "/a/b") and inside("/a/b/../b/c", "/a/b")
    assert not inside("/a/bc", "/a/b") and not inside("/a", "/a/b")
    assert inside("run/0_stage", str(tmp_path / "run")) and inside(str(tmp_path / "run"), "run")


def test_read_json_names_a_damaged_file_and_number_reads_null_as_nan(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"mIoU": null, "aAcc": 80.0}')
    data = read_json(str(path))
    assert math.isnan(number(data["mIoU"])) and number(data["aAcc"]) == 80.0
    path.write_text('{"mIoU": ')
    with pytest.raises(ValueError, match=f"^{path} is not valid JSON ") as raised:
        read_json(str(path))
    assert isinstance(raised.value.__cause__, json.JSONDecodeError)
