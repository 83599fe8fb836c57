"""Base of the stages that run a trained model once over a dataset (`prototypes`, `pseudo_labels`).

Same shape as the training stages: `Stage(cfg, output_dir, device)` builds (seeds, loads the model
of MODEL.WEIGHTS) and writes nothing; `run()` writes the config, the environment and the stage's
outputs, and returns {"outputs", "metrics"}.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from spcl.data.check import default_cache_dir, preflight
from spcl.modeling import load_trained_segmentor
from spcl.utils import comm
from spcl.utils.env import AMP_DTYPES, default_device, seed_all, write_run_info

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

    def data_names(self) -> list[str]:
        """Catalog names of the datasets the stage reads (checked before it starts)."""
        raise NotImplementedError

    def run(self) -> dict:
        if not self.output_dir:
            raise ValueError(f"stage {self.NAME} needs an output folder to run")
        if self.cfg.DATASETS.PREFLIGHT:
            preflight(self.cfg, self.data_names(), default_cache_dir(self.cfg))
        if comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            clear_temp_files(self.output_dir)
            write_run_info(self.cfg, self.output_dir, made=False)  # a rerun makes everything anew
        return self.compute()

    def compute(self) -> dict:
        raise NotImplementedError
