"""One run per output folder: an advisory lock (flock) on OUTPUT_DIR/.lock while a run writes there.

Two runs in one folder (a job submitted twice, a requeued job whose first copy still runs) would
interleave their checkpoints, labels and manifests; the second now stops before it writes anything and
names the first. The kernel drops the lock when the holding process ends, however it ends, so a crashed
or killed run leaves nothing to clean up (the file stays, and only says who held it last).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from typing import Iterator, Optional

import torch

from spcl.utils import comm
from spcl.utils.io import make_folder, space_hint

logger = logging.getLogger("spcl")
LOCK = ".lock"


class RunInUse(ValueError):
    """Another process holds the output folder's lock."""


_HELD: set = set()  # descriptors of the locks this process holds


def _release_in_child() -> None:
    """In a process forked from a lock holder (a DataLoader worker): let go of the inherited lock descriptors. A
    flock belongs to the open file, which a fork shares; workers orphaned by a killed run live on for ~5 s
    (until they notice), and held the folder that long, so an immediate rerun was refused as "in use". Each
    descriptor is pointed at /dev/null rather than closed, so that no later file takes its number while the
    inherited file object still owns it; the parent keeps its lock."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_in_child)


def _acquire(folder: str, name: str) -> tuple[Optional[object], str]:
    """(open locked file, "") or (None, who holds it); (None, "") where locks are unavailable. `name`: what
    gave the folder, for the error when a file stands where it should be."""
    path = os.path.join(folder, LOCK)
    unguarded = "cannot lock %s (%s): nothing stops a second run from writing into this folder"
    try:
        import fcntl
    except ImportError:  # Windows
        logger.warning(unguarded, path, "no flock on this system")
        return None, ""
    make_folder(folder, name)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, holder
    except OSError as e:  # a file system without flock (some network mounts)
        logger.warning(unguarded, path, e)
        handle.close()
        return None, ""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
    except OSError as e:  # a full disk, a quota: release the lock, and say which file
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        with contextlib.suppress(OSError):  # closing flushes the unwritten line again, and fails the same way
            handle.close()
        raise OSError(e.errno, f"cannot write lock file {path}: {e.strerror or e}{space_hint(e.errno)}; "
                               "nothing else was written") from e
    _HELD.add(handle.fileno())
    return handle, ""


def held_by(folder: str) -> str:
    """Who holds `folder`/.lock now ("" when nobody, or locks are unavailable); creates nothing."""
    path = os.path.join(folder, LOCK)
    try:
        import fcntl

        with open(path) as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
    except (ImportError, OSError):  # no flock here, no lock file, or a file system without locks
        pass
    return ""


def in_use_error(folder: str, holder: str, name: str = "OUTPUT_DIR") -> RunInUse:
    """The error for a folder another run holds; `name` is how the user gave it (a config key or a flag)."""
    return RunInUse(f"{name} {folder} is in use by another run ({holder}): two runs writing one folder "
                    f"would mix their files. Wait for it to end, or choose another {name}")


@contextlib.contextmanager
def run_lock(folder: str, name: str = "OUTPUT_DIR") -> Iterator[None]:
    """Hold `folder`/.lock for the block (the main process takes it; under several processes all stop
    when it is taken). Raises RunInUse naming the holder (pid, host, start time) and the folder as `name`
    (the config key or flag that gave it)."""
    handle, holder = _acquire(folder, name) if comm.is_main_process() else (None, "")
    if comm.is_dist():
        shared = [holder]
        torch.distributed.broadcast_object_list(shared, src=0)
        holder = shared[0]
    if holder:
        raise in_use_error(folder, holder, name)
    try:
        yield
    finally:
        if handle is not None:
            import fcntl

            _HELD.discard(handle.fileno())
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
