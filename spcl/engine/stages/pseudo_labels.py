"""`pseudo_labels` stage (paper Eq. 5): class thresholds and one label PNG per target training
image with the model of MODEL.WEIGHTS → `labels/` (+ `labels/thresholds.json`). Where the target
set has ground truth (the toy; never used for training), the labels' quality is measured too. A rerun
after an interruption reuses the predictions already made (`resume_key`) and reads only the images of the
batches still to predict (`target_batches`)."""
from __future__ import annotations

import logging
import os

from torch.utils.data import Subset

from spcl.data import build_dataset, build_test_loader
from spcl.evaluation import SemSegEvaluator
from spcl.pseudo import ImageBatches, generate_pseudo_labels, most_confused_with
from spcl.utils import comm

from ..events import EventWriter
from .offline import InferenceStage, resume_key

logger = logging.getLogger("spcl")


class PseudoLabelsStage(InferenceStage):
    NAME = "pseudo_labels"

    def data_names(self):
        return [(self.cfg.DATASETS.TARGET, "target")]

    def compute(self) -> dict:
        cfg = self.cfg
        dataset = build_dataset(cfg, cfg.DATASETS.TARGET, train=False, role="test", labels="optional",
                                list_for="target")  # TARGET_LIST, also when the target is the test set too
        loader = target_batches(cfg, dataset)
        label_dir = os.path.join(self.output_dir, "labels")
        if comm.is_main_process():
            remove_earlier_labels(label_dir)
        comm.synchronize()
        summary = generate_pseudo_labels(self.model, loader, label_dir, cfg.MODEL.NUM_CLASSES, self.device,
                                         cfg.PSEUDO.THRESHOLD_CAP, cfg.PSEUDO.NUM_BINS, progress=True,
                                         amp_dtype=self.amp_dtype, quality=SemSegEvaluator(cfg.MODEL.NUM_CLASSES),
                                         oracle=cfg.PSEUDO.ORACLE, resume_key=resume_key(cfg))
        if cfg.PSEUDO.ORACLE:
            logger.warning("pseudo labels: PSEUDO.ORACLE %s wrote ground truth, not predictions (a diagnostic)",
                           cfg.PSEUDO.ORACLE)
        events = EventWriter(self.output_dir, self.NAME, enabled=comm.is_main_process(), resumed_at=-1)
        events.write(0, {k: summary[k] for k in ("thresholds", "kept_fraction", "kept_fraction_per_class")})
        quality = summary.get("quality_on_kept_pixels", {})
        if quality:
            events.write(0, {"mIoU": quality["mIoU"], "labelled_correctly": summary["labelled_correctly"]},
                         prefix="quality/")
        events.close()
        logger.info("pseudo labels: %d images in %s, %.1f%% of pixels kept%s", summary["num_images"], label_dir,
                    100 * summary["kept_fraction"],
                    f", mIoU on kept pixels {quality['mIoU']:.2f}" if quality else "")
        metrics = {"kept_fraction": summary["kept_fraction"], "thresholds": summary["thresholds"]}
        if cfg.PSEUDO.ORACLE:  # the files hold ground truth: their labelled share, and the mark, go with the results
            metrics.update(oracle=cfg.PSEUDO.ORACLE, labelled_fraction=summary["labelled_fraction"])
        if quality:
            metrics["pseudo_label_mIoU"] = quality["mIoU"]
            metrics["labelled_correctly"] = summary["labelled_correctly"]
            names = summary["class_names"] or []
            missed = [f"{name} {share:.1f}%" + _instead(summary, k, names)
                      for k, (name, share) in enumerate(zip(names, summary["labelled_correctly"]))
                      if share == share and share < 10]
            if missed:
                logger.info("pseudo labels: classes with under 10%% of their target pixels labelled as themselves "
                            "(training on these labels cannot teach them): %s", ", ".join(missed))
        return {"outputs": {"pseudo_dir": label_dir}, "metrics": metrics}


def item_name(dataset, index: int) -> str:
    """The "name" item `index` of `dataset` carries, without reading it: the folder datasets' flat names
    (`a/x.jpg` → `a__x.png`), else the image file's name."""
    names = getattr(dataset, "names", None)
    return names[index] if names is not None else os.path.basename(dataset.items[index][0])


def target_batches(cfg, dataset) -> ImageBatches:
    """This process's share of `dataset` as `build_test_loader` batches it, loadable batch by batch: a resumed
    pass loads only the batches it has still to predict, each with the images it had in the whole loader."""
    whole = build_test_loader(cfg, dataset)
    chunks = [list(chunk) for chunk in whole.batch_sampler]  # dataset indices per batch
    names = [[item_name(dataset, i) for i in chunk] for chunk in chunks]

    def load(numbers):
        if numbers == list(range(len(chunks))):
            return whole
        indices = [i for b in numbers for i in chunks[b]]  # whole batches, all full but the last: same grouping
        return build_test_loader(cfg, Subset(dataset, indices), batch_size=whole.batch_size, shard=False)

    return ImageBatches(names, load)


def remove_earlier_labels(label_dir: str) -> int:
    """Remove the label PNGs and thresholds.json an earlier run left in `label_dir` (not its `.cache`, which
    `generate_pseudo_labels` keeps or discards by its key): a run over fewer images, or with another model,
    would otherwise leave a folder of labels from two models. Returns how many files went."""
    removed = 0
    for root, dirs, files in os.walk(label_dir):
        dirs[:] = [d for d in dirs if d != ".cache"]
        for name in files:
            if name.endswith(".png") or (root == label_dir and name == "thresholds.json"):
                os.remove(os.path.join(root, name))
                removed += 1
    return removed


def _instead(summary: dict, k: int, names) -> str:
    """' (its kept pixels most often mislabelled car: 33%)' for class k, or '' when none is or nothing is known."""
    top = most_confused_with(summary["confusion_on_kept_pixels"], k) if "confusion_on_kept_pixels" in summary else None
    return "" if top is None else f" (its kept pixels most often mislabelled {names[top[0]]}: {100 * top[1]:.0f}%)"
