"""Base of the stages that run a trained model once over a dataset (`prototypes`, `pseudo_labels`).

Same shape as the training stages: `Stage(cfg, output_dir, device)` builds (seeds, loads the model
of MODEL.WEIGHTS) and writes nothing; `run()` writes the config, the environment and the stage's
outputs, and returns {"outputs", "metrics"}.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import torch

from spcl.data.check import default_cache_dir, preflight
from spcl.modeling import load_trained_segmentor
from spcl.utils import comm
from spcl.utils.env import AMP_DTYPES, default_device, seed_all, write_run_info
from spcl.utils.io import atomic_torch_save, json_roundtrip, make_folder, remove_temp_files
from spcl.utils.safe_load import load_checkpoint

from ..trainer import clear_temp_files


class InferenceStage:
    """Args: cfg (frozen), output_dir (the stage's folder), device (default `default_device()`)."""

    NAME = ""

    def __init__(self, cfg, output_dir: Optional[str] = None, device: Optional[torch.device] = None):
        self.cfg, self.output_dir = cfg, output_dir
        self.device = device or default_device()
        self.amp_dtype = AMP_DTYPES[cfg.SOLVER.AMP]
        seed_all(cfg.SEED)
        if not cfg.MODEL.WEIGHTS:
            raise ValueError(f"stage {self.NAME} needs a trained model: set MODEL.WEIGHTS to a checkpoint")
        self.model = load_trained_segmentor(cfg, cfg.MODEL.WEIGHTS, self.device)

    def data_names(self) -> list:
        """The datasets the stage reads, checked before it starts: (catalog name, run role) pairs, so that a
        name with several roles in the run is checked in the one the stage reads it in."""
        raise NotImplementedError

    def run(self) -> dict:
        if not self.output_dir:
            raise ValueError(f"stage {self.NAME} needs an output folder to run")
        if self.cfg.DATASETS.PREFLIGHT:
            preflight(self.cfg, self.data_names(), default_cache_dir(self.cfg))
        if comm.is_main_process():
            make_folder(self.output_dir, "stage folder")
            clear_temp_files(self.output_dir)
            write_run_info(self.cfg, self.output_dir, made=False)  # a rerun makes everything anew
        return self.compute()

    def compute(self) -> dict:
        raise NotImplementedError


def resume_key(cfg) -> dict:
    """What an offline stage's results depend on, for reusing the work of an interrupted run: the whole
    config, the weights file (path, size, modification time) and the number of processes (each does its
    share)."""
    stat = os.stat(cfg.MODEL.WEIGHTS)
    return {"config": cfg.dump(), "weights": [os.path.abspath(cfg.MODEL.WEIGHTS), stat.st_size, stat.st_mtime_ns],
            "processes": comm.get_world_size()}


class PartialState:
    """This process's running state of a pass over a dataset, kept in `path` for a rerun after an interruption.

    `load()` gives the state a run with an equal `key` saved (else None); `maybe_save(state)` writes it
    (atomically, tensors moved to the CPU) when `period_s` seconds have passed since the last write;
    `remove()` once the pass's result is written.
    """

    def __init__(self, path: str, key: dict, period_s: float = 60.0):
        self.path, self.period_s = path, period_s
        self.key = json_roundtrip(key)
        self._last = time.monotonic()

    def load(self) -> Optional[dict]:
        remove_temp_files(os.path.dirname(self.path))  # a write a kill cut short
        if not os.path.isfile(self.path):
            return None
        try:
            saved = load_checkpoint(self.path)
        except Exception:  # noqa: BLE001 - a file of another version or cut short: start over
            return None
        return saved["state"] if isinstance(saved, dict) and saved.get("key") == self.key else None

    def maybe_save(self, state: dict) -> None:
        if time.monotonic() - self._last < self.period_s:
            return
        cpu = {k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in state.items()}
        atomic_torch_save({"key": self.key, "state": cpu}, self.path)
        self._last = time.monotonic()

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
        try:
            os.rmdir(os.path.dirname(self.path))  # the last process to finish removes the folder
        except OSError:
            pass
