"""One checkpointer for every stage: atomic saves (temp file + rename) of the model, discriminator,
prototype bank, optimisers, gradient scaler, iteration and RNG states, a `last_checkpoint` pointer,
and exact resume from it. Only the main process writes.

Checkpoints are read without running code from them (`spcl.utils.safe_load`). The numpy RNG state is
stored with its MT19937 key as a list of ints, so a new checkpoint holds only tensors and plain Python
values; the ndarray key of older checkpoints is still read (numpy's array types are allowlisted)."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from spcl.utils import comm
from spcl.utils.env import get_rng_state, set_rng_state
from spcl.utils.io import atomic_torch_save, atomic_write
from spcl.utils.safe_load import UntrustedCheckpointError, load_checkpoint

logger = logging.getLogger("spcl")
POINTER = "last_checkpoint"
SLIM_FORMAT = "spcl stage checkpoint"  # `converted_from["format"]` of a slim model file (tools/convert_checkpoint.py)


class Checkpointer:
    """Saves and restores a stage's state in `folder`.

    Args:
        folder: checkpoint folder (created on the first save); None for a stage that never saves.
        modules: name → module whose state_dict is saved under that name ("model" is the segmentor
            without DDP, the key MODEL.WEIGHTS reads).
        optimizers: name → optimizer.
        scaler: optional fp16 GradScaler.
        keep: periodic checkpoints kept (older ones are deleted; `model_final.pth` stays).
    """

    def __init__(self, folder: Optional[str], modules: dict, optimizers: dict, scaler=None, keep: int = 2):
        self.folder, self.modules, self.optimizers, self.scaler, self.keep = folder, modules, optimizers, scaler, keep
        self.resumed_data: Optional[dict] = None  # the "data" record of the checkpoint `resume` read, if it has one

    def state(self, iteration: int, extra: Optional[dict] = None) -> dict:
        data = {name: m.state_dict() for name, m in self.modules.items()}
        data["optimizers"] = {name: o.state_dict() for name, o in self.optimizers.items()}
        if self.scaler is not None:
            data["scaler"] = self.scaler.state_dict()
        data["iteration"] = iteration
        data["rng"] = plain_rng_state(get_rng_state())
        data.update(extra or {})
        return data

    def save(self, name: str, iteration: int, extra: Optional[dict] = None, periodic: bool = True,
             pointer: bool = True) -> str:
        """Write `folder/name.pth` atomically and (with `pointer`) point `last_checkpoint` at it."""
        if not self.folder:
            raise ValueError("this checkpointer has no folder: the stage was built without an output folder")
        path = os.path.join(self.folder, name + ".pth")
        if comm.is_main_process():
            os.makedirs(self.folder, exist_ok=True)
            atomic_torch_save(self.state(iteration, extra), path)
            if pointer:  # a temp file a kill leaves is cleared at the next start; a full disk names the file
                atomic_write(os.path.join(self.folder, POINTER), lambda f: f.write(os.path.basename(path)),
                             binary=False, what="checkpoint pointer")
            if periodic:
                self._prune()
            logger.info("saved checkpoint %s (iteration %d)", path, iteration)
        comm.synchronize()
        return path

    def _prune(self) -> None:
        periodic = sorted(f for f in os.listdir(self.folder) if f.startswith("model_") and f[6:13].isdigit())
        for old in periodic[:-self.keep] if self.keep > 0 else []:
            os.remove(os.path.join(self.folder, old))

    def last_checkpoint(self) -> Optional[str]:
        """The file `last_checkpoint` points at, if it exists (readable or not)."""
        if not self.folder:
            return None
        pointer = os.path.join(self.folder, POINTER)
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            path = os.path.join(self.folder, f.read().strip())
        return path if os.path.isfile(path) else None

    def candidates(self) -> list[str]:
        """Resume candidates, newest first: model_final.pth, then the periodic checkpoints by iteration
        (model_best.pth is a hand-off choice, never a resume point). The `last_checkpoint` pointer does not
        lead: a kill between a checkpoint and the pointer's update left it on the one before, and a rerun
        then redid up to SOLVER.CHECKPOINT_PERIOD iterations."""
        if not self.folder or not os.path.isdir(self.folder):
            return []
        files = [f for f in os.listdir(self.folder) if f.endswith(".pth") and
                 (f == "model_final.pth" or (f.startswith("model_") and f[6:13].isdigit()))]
        files.sort(key=lambda f: (f == "model_final.pth", f), reverse=True)
        return [os.path.join(self.folder, f) for f in files]

    def find_resume_checkpoint(self) -> Optional[str]:
        """The newest readable checkpoint of the folder, or None when there is none. An unreadable
        (torn, truncated) newer one is skipped with a warning; if every candidate is unreadable,
        an IOError lists them."""
        tried = []
        for path in self.candidates():
            reason = unreadable(path)
            if reason is None:
                if tried:
                    logger.warning("resuming from %s instead: %s", path,
                                   "; ".join(f"{p} is unreadable ({r})" for p, r in tried))
                return path
            tried.append((path, reason))
        if tried:
            raise IOError("no readable checkpoint to resume from in " + str(self.folder) + ": " +
                          "; ".join(f"{p}: {r}" for p, r in tried) + f". Delete the stage's folder "
                          f"{os.path.dirname(os.path.abspath(self.folder))} to run the stage afresh")
        return None

    @staticmethod
    def stored_config(path: str) -> Optional[str]:
        """The config (YAML text) saved in checkpoint `path`, or None for an older file."""
        data = load_checkpoint(path, mmap=True)
        return data.get("config") if isinstance(data, dict) else None

    def resume(self, path: str) -> int:
        """Restore everything from `path`; returns the iteration to continue from."""
        try:
            data = load_checkpoint(path)
        except UntrustedCheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise IOError(f"cannot read checkpoint {path}: {e}") from e
        if isinstance(data, dict) and "optimizers" not in data:
            wanted = f" for '{next(iter(self.optimizers))}'" if self.optimizers else ""
            raise KeyError(f"checkpoint {path} has no optimiser state{wanted}: it is {model_only(data)}, which cannot "
                           "be resumed from; give it as MODEL.WEIGHTS to start a stage from its weights")
        for name, module in self.modules.items():
            if name not in data:
                raise KeyError(f"checkpoint {path} has no '{name}' state; it was written by another stage")
            try:
                module.load_state_dict(data[name])
            except RuntimeError as e:
                raise ValueError(f"checkpoint {path} does not match this stage's '{name}': {e}") from e
        for name, opt in self.optimizers.items():
            if name not in data.get("optimizers", {}):
                raise KeyError(f"checkpoint {path} has no optimiser state for '{name}'; it was written by another "
                               "stage")
            opt.load_state_dict(with_kernels_of(opt, data["optimizers"][name]))
        if self.scaler is not None and "scaler" in data:
            self.scaler.load_state_dict(data["scaler"])
        if "rng" in data:
            set_rng_state(data["rng"])  # numpy takes the key as a list or an ndarray
        self.resumed_data = data.get("data") if isinstance(data.get("data"), dict) else None
        logger.info("resumed from %s at iteration %d", path, data["iteration"])
        return int(data["iteration"])


def with_kernels_of(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """`state` (an optimiser's state_dict) with each parameter group's kernel choice (`fused`, `foreach`)
    replaced by `optimizer`'s. `load_state_dict` takes every group setting from the saved state, so a
    run resumed with another SOLVER.FUSED_OPTIMIZER would otherwise go on with the kernel it was saved
    with; the state itself (moments, step counts) is the same for every kernel."""
    saved = list(state.get("param_groups", []))
    groups = [dict(group, **{k: current[k] for k in ("fused", "foreach") if k in current})
              for group, current in zip(saved, optimizer.param_groups)]
    # saved groups beyond the optimiser's stay, so that load_state_dict still refuses the mismatch
    return {**state, "param_groups": groups + saved[len(groups):]}


def unreadable(path: str) -> Optional[str]:
    """None when `path` loads as a resumable checkpoint (memory-mapped: cheap), else the reason it does not.
    A file refused as unsafe (`UntrustedCheckpointError`) is not skipped for an older one: it is raised."""
    data, reason = load_mapped(path)
    if reason:
        return reason
    if not isinstance(data, dict) or "iteration" not in data:
        return "not a checkpoint of a training stage (no 'iteration')"
    if "optimizers" not in data:
        return f"{model_only(data)}, not resumable (no optimiser state)"
    return None


def load_mapped(path: str) -> tuple[object, Optional[str]]:
    """(what `path` holds, None), loaded memory-mapped (cheap), or (None, why it does not load) in one line. A
    file refused as unsafe (`UntrustedCheckpointError`) is raised, not reported."""
    try:
        return load_checkpoint(path, mmap=True), None
    except UntrustedCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be read
        return None, f"{type(e).__name__}: {short_reason(str(e))}"


def short_reason(text: str, limit: int = 200) -> str:
    """The first line of an error message, cut to its whole sentences within `limit` characters (torch's
    "… failed finding central directory. This is an internal miniz error. If you are seeing this error, there
    is a high likelihood that your checkpoint file is corrupted. …" used to end at "file is"), else to
    `limit` characters and "…"."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) <= limit:
        return first
    end = first.rfind(". ", 0, limit)
    return first[:end + 1] if end > 0 else first[:limit].rstrip() + "…"


def model_only(data: dict) -> str:
    """How to name a checkpoint without training state: a slim model file, a converted released one, or
    another model-only file."""
    origin = data.get("converted_from") if isinstance(data.get("converted_from"), dict) else {}
    if origin.get("format") == SLIM_FORMAT:
        return "a slim model file (tools/convert_checkpoint.py)"
    if origin:
        return f"a model converted from a {origin.get('format', 'foreign')} checkpoint"
    return "a model-only file"


def plain_rng_state(state: dict) -> dict:
    """`get_rng_state()` with numpy's MT19937 key as a list of ints: no numpy objects in the file
    (`np.random.set_state` takes the list as it takes the ndarray of older checkpoints)."""
    name, key, *rest = state["numpy"]
    return {**state, "numpy": (name, [int(k) for k in key], *rest)}
