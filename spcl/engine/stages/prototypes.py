"""`prototypes` stage: the initial class prototypes (paper Eq. 2) from the source set with the model
of MODEL.WEIGHTS → `prototypes.pth` (K×C, with per-class counts). Each process saves its running sums
every SAVE_PERIOD_S seconds (`.partial/`), and a rerun after an interruption continues from them."""
from __future__ import annotations

import logging
import os
import statistics

from spcl.data import build_dataset, build_test_loader
from spcl.data.labels import class_names
from spcl.prototypes import compute_source_prototypes
from spcl.utils import comm
from spcl.utils.io import atomic_torch_save
from spcl.utils.progress import progress

from ..events import EventWriter
from .offline import InferenceStage, PartialState, resume_key

logger = logging.getLogger("spcl")
SAVE_PERIOD_S = 60.0  # how often each process saves its running sums for a rerun after an interruption


class PrototypesStage(InferenceStage):
    NAME = "prototypes"

    def data_names(self):
        return [(self.cfg.DATASETS.SOURCE, "source")]

    def compute(self) -> dict:
        cfg = self.cfg
        dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=False, role="source_eval")
        dataset = dataset.first(cfg.PROTOTYPE.NUM_IMAGES)
        partial = PartialState(os.path.join(self.output_dir, ".partial", f"rank{comm.get_rank()}.pth"),
                               resume_key(cfg), SAVE_PERIOD_S)
        state = partial.load()
        if state is not None:
            logger.info("prototypes: resuming after %d source image(s) this process summed in an interrupted run "
                        "with the same model and config", state["images"])
        loader = progress(build_test_loader(cfg, dataset, start=state["images"] if state else 0), "prototypes")
        result = compute_source_prototypes(self.model, loader, cfg.MODEL.NUM_CLASSES, self.device,
                                           cfg.PROTOTYPE.INIT, cfg.PROTOTYPE.SOURCE_MASK, state=state,
                                           save=partial.maybe_save)
        path = os.path.join(self.output_dir, "prototypes.pth")
        if comm.is_main_process():
            atomic_torch_save({"prototypes": result["prototypes"], "counts": result["counts"],
                               "init": cfg.PROTOTYPE.INIT, "source_mask": cfg.PROTOTYPE.SOURCE_MASK}, path)
        comm.synchronize()
        partial.remove()
        stats = prototype_stats(result["prototypes"], result["counts"], cfg.PROTOTYPE.INIT)
        names = _names(len(result["counts"]))
        absent = [names[i] for i, c in enumerate(result["counts"].tolist()) if c == 0]
        unit = stats["count_unit"]
        logger.info("prototypes of %d classes written to %s: %d/%d classes seen, %s per seen class min %d / "
                    "median %g, mean prototype norm %.4f%s", len(result["counts"]), path, stats["classes_seen"],
                    len(result["counts"]), unit, stats[f"{unit}_per_class_min"], stats[f"{unit}_per_class_median"],
                    stats["mean_prototype_norm"],
                    f" (never seen, zero prototypes: {', '.join(absent)})" if absent else "")
        events = EventWriter(self.output_dir, self.NAME, enabled=comm.is_main_process(), resumed_at=-1)
        events.write(0, {k: v for k, v in stats.items() if k != "count_unit"})
        events.close()
        metrics = {k: v for k, v in stats.items() if k not in ("count_unit", f"{unit}_per_class")}
        return {"outputs": {"prototypes": path}, "metrics": metrics}


def _names(num_classes: int) -> list[str]:
    try:
        return list(class_names(num_classes))
    except ValueError:
        return [str(i) for i in range(num_classes)]


def prototype_stats(prototypes, counts, init: str = "pixel_mean") -> dict:
    """What the prototypes stage reports: classes seen, the per-class counts (pixels, or images for
    PROTOTYPE.INIT image_mean) with their min and median over the seen classes, and the mean L2 norm
    of the seen classes' prototypes (means of unit vectors: 1 when a class's features all point the
    same way, smaller the more they spread)."""
    unit = "images" if init == "image_mean" else "pixels"
    counts = [float(c) for c in counts.tolist()]
    seen = [i for i, c in enumerate(counts) if c > 0]
    norms = prototypes.double().norm(dim=1).tolist()
    seen_counts = [counts[i] for i in seen]
    return {
        "count_unit": unit,
        "classes_seen": len(seen),
        f"{unit}_per_class": [int(c) for c in counts],
        f"{unit}_per_class_min": int(min(seen_counts)) if seen else 0,
        f"{unit}_per_class_median": float(statistics.median(seen_counts)) if seen else 0.0,
        "mean_prototype_norm": float(sum(norms[i] for i in seen) / len(seen)) if seen else 0.0,
    }
