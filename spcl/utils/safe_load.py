"""Reading checkpoint files without running code from them.

A `.pth` file is a pickle, and full unpickling (`torch.load(weights_only=False)`) runs whatever a file
asks for: a shared checkpoint could execute any command on the reader's machine. Every checkpoint spcl
reads goes through `load_checkpoint`, which uses PyTorch's restricted unpickler (`weights_only=True`):
tensors, plain Python values and containers, and exactly the few extra types spcl's own checkpoints
hold, from before the numpy RNG state was stored as a list: numpy's array reconstruction, `ndarray`,
`dtype` and the uint32 dtype class (the MT19937 key of `np.random.get_state()`), under their numpy 1 and
numpy 2 names. Building arrays of these types calls no code named by the file.

A file that asks for anything else is refused with one line naming the file and what it asks for. A
user who trusts such a file sets `SPCL_TRUST_CHECKPOINTS=1`: it is then loaded with full pickle, with a
warning. Files that need nothing beyond the allowlist load the same way with or without it."""
from __future__ import annotations

import logging
import os
import pickle
import re

import torch

logger = logging.getLogger("spcl")
TRUST_ENV = "SPCL_TRUST_CHECKPOINTS"
_ASKED = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")


if not hasattr(torch.serialization, "safe_globals"):  # before 2.5; its (obj, name) entries need 2.6
    raise ImportError(f"spcl reads checkpoints with torch.load's restricted loader, which needs torch >= 2.6; this "
                      f"is torch {torch.__version__} (setup.py asks for torch>=2.6): upgrade PyTorch")


class UntrustedCheckpointError(ValueError):
    """A checkpoint that asks the unpickler for more than spcl's allowlist: loading it would run its code."""


def allowed_globals() -> list:
    """What `load_checkpoint` allows besides PyTorch's own safe types: the numpy RNG state of older spcl
    checkpoints (`np.random.get_state()`: a uint32 ndarray)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    reconstruct = core.multiarray._reconstruct
    return [(reconstruct, "numpy._core.multiarray._reconstruct"), (reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str, mmap: bool = False):
    """`torch.load(path)` to CPU with the restricted unpickler and `allowed_globals()`. `mmap`: map the
    tensors instead of reading them (cheap for reading metadata; legacy non-zip files are read whole).
    A file asking for anything else raises `UntrustedCheckpointError`, unless `SPCL_TRUST_CHECKPOINTS=1`.
    A file that does not start as torch.save writes (a text or JSON file, an empty one) raises an
    UnpicklingError saying so. Other failures (missing, truncated) raise what `torch.load` raises."""
    head = _head(path) if os.path.isfile(path) else None
    if head is not None and not head.startswith((b"PK\x03\x04", b"\x80")):  # a zip archive, or a legacy pickle
        raise pickle.UnpicklingError("an empty file" if not head else "not a PyTorch checkpoint file (neither a zip "
                                     f"archive nor a pickle: it starts with {head!r})")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return _torch_load(path, mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        asked = _asked_for(str(e))
        if asked is None:  # torch's many lines say to retry with weights_only=False: keep only the reason
            raise pickle.UnpicklingError(_reason(str(e))) from e
        if os.environ.get(TRUST_ENV) == "1":
            logger.warning("loading %s with full pickle, which runs code from the file (it asks for %s): "
                           "%s=1 says it is trusted", path, asked, TRUST_ENV)
            return _torch_load(path, mmap, weights_only=False)
        raise UntrustedCheckpointError(
            f"refusing to load {path}: it asks for {asked}, which spcl's checkpoints never hold, and loading it "
            f"would run code from the file; only if you trust where it came from, set {TRUST_ENV}=1 to load it "
            "with full pickle") from e


def _head(path: str, n: int = 8) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _torch_load(path: str, mmap: bool, weights_only: bool):
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):  # a legacy (non-zip) file cannot be mapped: read it whole
                raise
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _asked_for(message: str):
    """The global a refused file asks for, from the restricted unpickler's error; None for another error
    (a file that is no pickle at all, e.g. "Unsupported operand 110", is unreadable, not untrusted)."""
    found = _ASKED.search(message) if "Weights only load failed" in message else None
    return f"the global {found.group(1) or found.group(2)}" if found else None


def _reason(message: str) -> str:
    """One line of what the restricted unpickler found, without torch's advice to disable it."""
    text = message.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
    return " ".join(text.split())[:200] or "unreadable pickle"
