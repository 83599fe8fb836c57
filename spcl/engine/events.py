"""Training events: a `metrics.json` file of JSON lines and TensorBoard scalars (main process only)."""
from __future__ import annotations

import json
import os
from typing import Optional


class EventWriter:
    """Appends `{"iteration": it, "stage": …, **scalars}` lines to `metrics.json` and TensorBoard."""

    def __init__(self, folder: str, stage: str, enabled: bool = True, tensorboard: bool = True):
        self.folder, self.stage, self.enabled = folder, stage, enabled
        self.tb = None
        if enabled:
            os.makedirs(folder, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                    self.tb = SummaryWriter(os.path.join(folder, "tb"))
                except ImportError:  # pragma: no cover - tensorboard is a dependency
                    self.tb = None

    def write(self, iteration: int, scalars: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, "stage": self.stage}
        record.update({prefix + k: v for k, v in scalars.items()})
        with open(os.path.join(self.folder, "metrics.json"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.stage}/{prefix}{k}", v, iteration)
                elif isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
                    for i, x in enumerate(v):
                        self.tb.add_scalar(f"{self.stage}/{prefix}{k}/{i:02d}", x, iteration)

    def close(self, _: Optional[object] = None) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
