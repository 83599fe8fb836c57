"""Reproducibility helpers: seeding, RNG state capture/restore, environment and git description.

Used by the trainer (seed, RNG in checkpoints) and by tools (environment written to each output).
"""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """RNG states of python, numpy, torch (and CUDA when present), for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_describe() -> str:
    """Commit hash of the code (with '-dirty' for local changes), or 'unknown' outside git."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect_env() -> str:
    """A short text description of the software and hardware of this run."""
    lines = [
        f"python: {sys.version.split()[0]} ({platform.platform()})",
        f"torch: {torch.__version__}, cuda available: {torch.cuda.is_available()}",
        f"threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}",
        f"numpy: {np.__version__}",
        f"git: {git_describe()}",
        f"command: {' '.join(sys.argv)}",
    ]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
    try:
        import torchvision
        lines.append(f"torchvision: {torchvision.__version__}")
    except ImportError:  # pragma: no cover
        pass
    return "\n".join(lines) + "\n"


def write_run_info(cfg, output_dir: str) -> None:
    """Write `config.yaml` and `env.txt` into `output_dir` (main process only by caller)."""
    from spcl.config import dump_config

    dump_config(cfg, output_dir)
    with open(os.path.join(output_dir, "env.txt"), "w") as f:
        f.write(collect_env())
