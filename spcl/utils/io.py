"""Small file helpers: atomic writes (temp file + rename) for checkpoints, JSON and manifests.

A write that fails (a full disk, a quota, a kill) leaves the previous file at `path` intact and no
temp file behind, and raises one `OSError` naming the path. Written files get the permissions of a
plain `open()` under the user's umask (a temp file from `mkstemp` would otherwise stay 0600, so
labmates on a shared cluster could not read checkpoints and results).
"""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from typing import Callable

import torch


def where_read(path: str) -> str:
    """`", read relative to the current directory DIR"` for a relative `path` ("" for an absolute or empty
    one), for not-found errors: config and command-line paths are read from wherever a tool is run."""
    if not path or os.path.isabs(path):
        return ""
    return f", read relative to the current directory {os.getcwd()}"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def folder_blocked(folder: str, name: str) -> str:
    """"" when `folder` is a folder or can be made (its nearest existing parent is one); otherwise the error
    line naming the file in the way, `name` being what gave the folder (a flag, a config key). os.makedirs
    would say only "[Errno 17] File exists: 'F'" or "[Errno 20] Not a directory"."""
    path = _nearest_existing(folder)
    if os.path.isdir(path):
        return ""
    where = "is" if path == os.path.abspath(folder) else f"lies under {path}, which is"
    return f"{name} {folder} {where} a file, not a folder: give a folder for the outputs"


def _nearest_existing(folder: str) -> str:
    """`folder` (absolute) if it exists, else its nearest existing parent: where os.makedirs would start."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def folder_unwritable(folder: str, name: str) -> str:
    """"" unless the folder `folder` is or would be made in (its nearest existing parent) cannot be written by
    this user (no permission, a read-only file system): then the error line naming `name` (a flag, a config
    key). A run there used to stop only when it first wrote, as "[Errno 30] Read-only file system: 'F'"."""
    path = _nearest_existing(folder)
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        return (f"{name} {folder} cannot be written: {path} is read-only to this user (no permission, or a "
                "read-only file system); give a folder you can write to")
    return ""


def make_folder(folder: str, name: str) -> None:
    """os.makedirs(folder, exist_ok=True), with a file in the way named (`folder_blocked`) as a
    NotADirectoryError, and a folder that cannot be made (`folder_unwritable`, or what os.makedirs says) as an
    OSError naming `name` too."""
    blocked = folder_blocked(folder, name)
    if blocked:
        raise NotADirectoryError(blocked)
    unwritable = folder_unwritable(folder, name)
    if unwritable:
        raise PermissionError(errno.EACCES, unwritable)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"{name} {folder} cannot be made ({e.strerror or e}){space_hint(e.errno)}: give a "
                               "folder you can write to") from e


def atomic_write(path: str, write: Callable, binary: bool = True, what: str = "file") -> None:
    """Call `write(f)` on a temp file beside `path`, then rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder, f"cannot write {what} {path}: its folder")
    if os.path.isdir(path):  # the rename would fail as "[Errno 21] Is a directory" after the whole write
        raise IsADirectoryError(f"cannot write {what} {path}: it is a folder; give the path of a file")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}_", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        interrupt = _in_chain(e, KeyboardInterrupt)
        if interrupt is not None and interrupt is not e:  # torch.save's zip writer turns Ctrl-C into a RuntimeError
            raise interrupt from None
        cause = _os_error_in_chain(e)
        if cause is not None:
            reason = cause.strerror or str(cause)
            raise OSError(cause.errno, f"cannot write {what} {path}: {reason}{space_hint(cause.errno)}; "
                                       "the previous file there, if any, is intact") from e
        raise


def space_hint(code) -> str:
    """' (disk full or quota reached?)' for the errors that mean it, else '' (a folder in the way, a
    permission: the hint would mislead)."""
    return " (disk full or quota reached?)" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""


def _os_error_in_chain(e: BaseException):
    """The OSError behind `e`, if any: `e` itself or what it was raised from or during. On a full disk
    `torch.save` raises a RuntimeError ("unexpected pos …", from closing its zip writer) while
    handling the OSError (ENOSPC) of the write that failed."""
    return _in_chain(e, OSError)


def _in_chain(e: BaseException, kind: type):
    """The exception of type `kind` behind `e`, if any: `e` itself or what it was raised from or during."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


TEMP_PREFIX = ".tmp_"  # atomic_write's temp files: .tmp_<pid of the writer>_<random><suffix>


def remove_temp_files(folder: str, recursive: bool = False, live_writers: bool = False) -> int:
    """Remove the temp files of `atomic_write` that a killed process left in `folder` (and below it with
    `recursive`): those whose writer, named in the file name, is no longer running on this machine (a live
    writer, such as a tool writing into a run folder as the run starts, keeps its file). `live_writers`: every
    temp file, for a folder only the caller writes (a rerun in a fresh container or job often gets the killed
    run's pid back, which would look alive). Returns how many."""
    removed = 0
    for root, dirs, files in os.walk(folder) if os.path.isdir(folder) else ():
        for name in files:
            if name.startswith(TEMP_PREFIX) and (live_writers or not _writer_alive(name)):
                try:
                    os.remove(os.path.join(root, name))
                    removed += 1
                except FileNotFoundError:  # its writer renamed or removed it meanwhile
                    pass
        if not recursive:
            break
    return removed


def _writer_alive(name: str) -> bool:
    """Whether the process that `atomic_write` named in temp file `name` still runs here (False for a name
    without one: a file of an older version)."""
    pid = name[len(TEMP_PREFIX):].split("_", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_torch_save(obj, path: str) -> None:
    """`torch.save` to a temp file in the same folder, then rename: no half-written checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, what="checkpoint")


def atomic_write_json(obj, path: str) -> None:
    """Write `obj` as standard JSON (`json_safe`: NaN and infinities as null) atomically (temp file + rename)."""
    def write(f):
        json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    atomic_write(path, write, binary=False, what="file")


def json_safe(obj):
    """`obj` as standard JSON holds it: NaN and ±infinity become None (null), arrays and tensors lists,
    tuples lists. Python's `json` writes a bare `NaN` by default, which JSON (RFC 8259) does not allow and
    which JavaScript, Go and Rust readers reject; a per-class IoU of a class absent from the test set is
    NaN. Readers here turn null back into NaN where a number is expected (`number`)."""
    if isinstance(obj, float):  # numpy float64 included
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, tensors
        return json_safe(obj.tolist())
    if obj is None or isinstance(obj, (str, int)):  # bool is an int
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def number(value):
    """A number read back from a file `json_safe` wrote: None (a NaN or infinity written as null) is NaN."""
    return math.nan if value is None else value


def json_roundtrip(obj):
    """`obj` as it reads back from JSON (tuples become lists, NaN null): a key about to be saved compares
    equal to the one read back from the file."""
    return json.loads(json.dumps(json_safe(obj), allow_nan=False))


def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (both absolute or relative to the current directory)."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def read_json(path: str):
    """The JSON in `path`; a damaged file is a ValueError that names it."""
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:  # not JSON, or bytes that are not UTF-8
            raise ValueError(f"{path} is not valid JSON ({e})") from e
