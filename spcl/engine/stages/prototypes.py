"""`prototypes` stage: the initial class prototypes (paper Eq. 2) from the source set with the model
of MODEL.WEIGHTS → `prototypes.pth` (K×C, with per-class counts)."""
from __future__ import annotations

import logging
import os

from spcl.data import build_dataset, build_test_loader
from spcl.prototypes import compute_source_prototypes
from spcl.utils import comm
from spcl.utils.io import atomic_torch_save
from spcl.utils.progress import progress

from .offline import InferenceStage

logger = logging.getLogger("spcl")


class PrototypesStage(InferenceStage):
    NAME = "prototypes"

    def data_names(self):
        return [self.cfg.DATASETS.SOURCE]

    def compute(self) -> dict:
        cfg = self.cfg
        dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=False, role="source_eval")
        loader = progress(build_test_loader(cfg, dataset), "prototypes")
        result = compute_source_prototypes(self.model, loader, cfg.MODEL.NUM_CLASSES, self.device,
                                           cfg.PROTOTYPE.INIT, cfg.PROTOTYPE.SOURCE_MASK, cfg.PROTOTYPE.NUM_IMAGES)
        path = os.path.join(self.output_dir, "prototypes.pth")
        if comm.is_main_process():
            atomic_torch_save({"prototypes": result["prototypes"], "counts": result["counts"],
                               "init": cfg.PROTOTYPE.INIT, "source_mask": cfg.PROTOTYPE.SOURCE_MASK}, path)
        comm.synchronize()
        absent = [i for i, c in enumerate(result["counts"].tolist()) if c == 0]
        logger.info("prototypes of %d classes written to %s%s", len(result["counts"]), path,
                    f" (classes {absent} never seen: zero prototypes)" if absent else "")
        return {"outputs": {"prototypes": path}, "metrics": {"classes_seen": len(result["counts"]) - len(absent)}}
