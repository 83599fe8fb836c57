"""One run per output folder: a second run into a folder in use stops before writing and names the
first (pid, host), in every process of a multi-process run and through tools/train.py; a holder that
dies, however it dies, leaves the folder free."""
import contextlib
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from conftest import run_tool, tiny_cfg
from spcl.engine import launch, run_pipeline
from spcl.utils.run_lock import LOCK, RunInUse, run_lock

pytestmark = pytest.mark.usefixtures("on_the_cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys; from spcl.utils.run_lock import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()")


def test_a_pipeline_into_a_folder_in_use_stops_before_writing_and_names_the_holder(toy_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = tiny_cfg(toy_root, out, "PIPELINE.STAGES", "['source_only']", "SOURCE_ONLY.STOP_ITER", "1")
    with run_lock(out):
        with pytest.raises(RunInUse, match=rf"OUTPUT_DIR {out} is in use by another run \(pid {os.getpid()} on "
                                            rf"{socket.gethostname()} since .* UTC\)"):
            run_pipeline(cfg)
        assert os.listdir(out) == [LOCK]  # nothing else written
    run_pipeline(cfg)  # released: the run goes ahead
    assert os.path.exists(os.path.join(out, "summary.json"))


def test_an_error_inside_releases_the_folder(tmp_path):
    with pytest.raises(KeyError):
        with run_lock(str(tmp_path)):
            raise KeyError("boom")
    with run_lock(str(tmp_path)):
        pass


def test_another_process_holds_the_folder_until_it_dies_even_by_sigkill(tmp_path):
    folder = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"pid {holder.pid} on "):
            with run_lock(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(folder):  # no stale lock to clean up
        with open(os.path.join(folder, LOCK)) as f:
            assert f.read().startswith(f"pid {os.getpid()} on ")


FORK_AND_HOLD = """
import os, sys, time
from spcl.utils.run_lock import run_lock
with run_lock(sys.argv[1]):
    child = os.fork()
    if child == 0:  # a DataLoader worker's way of starting: it outlives a killed parent for a few seconds
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    sys.stdin.readline()
"""


def test_processes_forked_by_a_killed_run_do_not_hold_its_folder(tmp_path):
    """A run killed by SIGKILL leaves its forked DataLoader workers alive for ~5 s; they inherited the lock, and
    an immediate rerun (a requeued job) was refused as "in use" by the dead run's pid."""
    folder = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", FORK_AND_HOLD, folder], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(RunInUse, match=f"pid {holder.pid} on "):  # the parent's lock is still held
            with run_lock(folder):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the forked child still runs
        with run_lock(folder):
            pass
    finally:
        holder.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def _enter(folder, result):
    from spcl.utils import comm

    try:
        with run_lock(folder):
            outcome = "entered"
    except RunInUse as e:
        outcome = str(e)
    torch.save(outcome, result.format(rank=comm.get_rank()))


def test_every_process_of_a_run_stops_when_its_folder_is_in_use(tmp_path):
    folder, result = str(tmp_path / "run"), str(tmp_path / "rank{rank}.pt")
    with run_lock(folder):
        launch(_enter, num_processes=2, args=(folder, result), backend="gloo")
    r0, r1 = (torch.load(result.format(rank=r)) for r in (0, 1))
    assert r0 == r1 and f"pid {os.getpid()} on " in r0
    launch(_enter, num_processes=2, args=(folder, result), backend="gloo")  # free now: both go ahead
    assert [torch.load(result.format(rank=r)) for r in (0, 1)] == ["entered", "entered"]


def test_train_py_into_a_folder_in_use_prints_one_line(toy_root, tmp_path):
    out = str(tmp_path / "run")
    args = ["--config", os.path.join(ROOT, "configs", "toy.yaml"), "OUTPUT_DIR", out,
            "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False"]
    with run_lock(out):  # held by this process; the tool's own lock is a separate one, as another process's
        for stage in ([], ["--stage", "source_only"]):
            proc = run_tool("train.py", *stage, *args)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert f"error: OUTPUT_DIR {out} is in use by another run (pid {os.getpid()} on " in lines[-2]
            assert lines[-1] == "(run with --debug for the full traceback)"
        assert os.listdir(out) == [LOCK]


def test_a_file_system_without_flock_warns_and_runs_unguarded(tmp_path, monkeypatch):
    import fcntl
    import logging

    def no_locks(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("spcl").addHandler(handler)
    try:
        with run_lock(str(tmp_path)):
            pass
    finally:
        logging.getLogger("spcl").removeHandler(handler)
    assert seen == [f"cannot lock {tmp_path / LOCK} ([Errno 37] No locks available): nothing stops a second run "
                    "from writing into this folder"]


def test_a_holder_that_wrote_no_line_is_named_as_another_process(tmp_path):
    """A lock taken by something that did not write the holder line (an older version, another tool): the
    error and `held_by` still say the folder is in use, and name no one."""
    import fcntl

    from spcl.utils.run_lock import held_by

    folder = str(tmp_path)
    with open(os.path.join(folder, LOCK), "a+") as other:  # another open file: flock refuses it to run_lock too
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert held_by(folder) == "another process"
        with pytest.raises(RunInUse, match=rf"^OUTPUT_DIR {folder} is in use by another run \(another process\): "
                                           r"two runs writing one folder would mix their files\. Wait for it to "
                                           r"end, or choose another OUTPUT_DIR$"):
            with run_lock(folder):
                pass
        with pytest.raises(RunInUse, match=r"\(another process\).* or choose another --output$"):
            with run_lock(folder, "--output"):
                pass
    assert held_by(folder) == ""
    with run_lock(folder):
        assert held_by(folder).startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")


def test_held_by_creates_nothing_and_says_nobody_for_a_folder_that_is_not_one(tmp_path):
    from spcl.utils.run_lock import held_by

    assert held_by(str(tmp_path / "missing")) == "" and not os.path.exists(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    assert held_by(str(tmp_path / "afile")) == ""  # NotADirectoryError: nobody holds it


def test_the_lock_file_holds_one_line_naming_the_current_holder(tmp_path):
    """The line of an earlier holder is replaced, not appended to."""
    with open(tmp_path / LOCK, "w") as f:
        f.write("pid 1 on an-old-host since 2020-01-01 00:00:00 UTC, and a longer line than the new one\n")
    with run_lock(str(tmp_path)):
        with open(tmp_path / LOCK) as f:
            lines = f.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")


def test_a_system_without_flock_warns_and_runs_unguarded(tmp_path, monkeypatch):
    """No fcntl module (Windows): one warning, the block runs, and nothing is written."""
    import logging

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError
    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("spcl").addHandler(handler)
    ran = []
    try:
        with run_lock(str(tmp_path / "run")):
            ran.append(True)
    finally:
        logging.getLogger("spcl").removeHandler(handler)
    assert ran == [True] and not os.path.exists(tmp_path / "run")
    assert seen == [f"cannot lock {tmp_path / 'run' / LOCK} (no flock on this system): nothing stops a second run "
                    "from writing into this folder"]


def test_another_reader_of_the_lock_is_no_holder(tmp_path):
    """held_by takes a shared lock to look: another process looking at the same moment (a shared lock) is not a
    run in the folder."""
    import fcntl

    from spcl.utils.run_lock import held_by

    with open(tmp_path / LOCK, "w") as looking:
        fcntl.flock(looking.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert held_by(str(tmp_path)) == ""


@pytest.mark.parametrize("ends", ["normally", "with an error"])
def test_a_file_opened_after_the_lock_is_released_is_left_alone_in_forked_children(tmp_path, ends):
    """Forked children point the inherited lock descriptors at /dev/null (see _release_in_child); once the run has
    released the lock its descriptor number is free, and a file that later gets that number must reach children."""
    from spcl.utils import run_lock as run_lock_module

    with contextlib.suppress(KeyError):
        with run_lock(str(tmp_path / "run")):
            (fd,) = run_lock_module._HELD
            if ends == "with an error":
                raise KeyError("boom")
    data = tmp_path / "data.txt"
    data.write_text("the file's own bytes")
    opened = os.open(data, os.O_RDONLY)
    if opened != fd:  # the file now has the number the lock had
        os.dup2(opened, fd)
        os.close(opened)
    try:
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # the child reports what it reads from that number
            try:
                os.write(w, os.read(fd, 100) or b"<nothing>")
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(child, 0)
        assert os.read(r, 100) == b"the file's own bytes"
        os.close(r)
    finally:
        os.close(fd)
