"""One checkpointer for every stage: atomic saves (temp file + rename) of the model, discriminator,
prototype bank, optimisers, gradient scaler, iteration and RNG states, a `last_checkpoint` pointer,
and exact resume from it. Only the main process writes."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from spcl.utils import comm
from spcl.utils.env import get_rng_state, set_rng_state
from spcl.utils.io import atomic_torch_save

logger = logging.getLogger("spcl")
POINTER = "last_checkpoint"


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

    def state(self, iteration: int, extra: Optional[dict] = None) -> dict:
        data = {name: m.state_dict() for name, m in self.modules.items()}
        data["optimizers"] = {name: o.state_dict() for name, o in self.optimizers.items()}
        if self.scaler is not None:
            data["scaler"] = self.scaler.state_dict()
        data["iteration"] = iteration
        data["rng"] = get_rng_state()
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
            if pointer:
                tmp = os.path.join(self.folder, POINTER + ".tmp")
                with open(tmp, "w") as f:
                    f.write(os.path.basename(path))
                os.replace(tmp, os.path.join(self.folder, POINTER))
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
        if not self.folder:
            return None
        pointer = os.path.join(self.folder, POINTER)
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            path = os.path.join(self.folder, f.read().strip())
        return path if os.path.isfile(path) else None

    def resume(self, path: str) -> int:
        """Restore everything from `path`; returns the iteration to continue from."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise IOError(f"cannot read checkpoint {path}: {e}") from e
        for name, module in self.modules.items():
            if name not in data:
                raise KeyError(f"checkpoint {path} has no '{name}' state; it was written by another stage")
            try:
                module.load_state_dict(data[name])
            except RuntimeError as e:
                raise RuntimeError(f"checkpoint {path} does not match this stage's '{name}': {e}") from e
        for name, opt in self.optimizers.items():
            opt.load_state_dict(data["optimizers"][name])
        if self.scaler is not None and "scaler" in data:
            self.scaler.load_state_dict(data["scaler"])
        if "rng" in data:
            set_rng_state(data["rng"])
        logger.info("resumed from %s at iteration %d", path, data["iteration"])
        return int(data["iteration"])
