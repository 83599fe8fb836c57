"""Semantic-segmentation metrics from a confusion matrix built with `torch.bincount` and summed over
processes (torchvision references style). A class with no ground truth and no prediction has IoU NaN
and is left out of every mean, as in the Cityscapes evaluation script."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from spcl.data.labels import CLASSES_13, IGNORE_LABEL, TAIL_CLASSES, class_names, subset_indices
from spcl.utils import comm


class SemSegEvaluator:
    """Accumulates a K×K confusion matrix (rows = ground truth, columns = prediction).

    Args:
        num_classes: K.
        ignore_index: label value left out of every count.
        class_names: names for the report (defaults to the 19/16-class Cityscapes names).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_LABEL, class_names: Optional[Sequence[str]] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        if class_names is None and num_classes in (16, 19):
            from spcl.data.labels import class_names as _names
            class_names = _names(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @torch.no_grad()
    def process(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: `pred` and `label` integer tensors of the same shape (B×H×W)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        pred, label = pred.reshape(-1).long(), label.reshape(-1).long().to(pred.device)
        k, ignore = self.num_classes, self.ignore_index
        if ignore < k or pred.numel() == 0:  # unusual ignore index: the plain masked path
            self._process_masked(pred, label)
            return
        # Fast path without masked selects (each a gather of the whole map): every pixel goes into
        # one bincount of label·K + pred; ignored pixels land in the band [ignore·K, ignore·K + K)
        # past the K×K matrix, and any other count past it is a label outside [0, K).
        lo, hi = torch.aminmax(pred)
        lab_lo, lab_hi = torch.aminmax(label)
        if lo < 0 or hi >= k or lab_lo < 0 or lab_hi > ignore:  # rare: decide (and word the error) as the plain path
            self._process_masked(pred, label)
            return
        idx = label * k
        idx.add_(pred)
        counts = torch.bincount(idx, minlength=k * k)
        extra = counts[k * k:].clone()
        extra[(ignore - k) * k:(ignore - k + 1) * k] = 0
        if extra.any():
            raise ValueError(f"labels outside [0, {k}) and {ignore}")
        self.confusion += counts[:k * k].reshape(k, k).cpu()

    def _process_masked(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        valid = label != self.ignore_index
        if (label[valid] >= self.num_classes).any() or (label[valid] < 0).any():
            raise ValueError(f"labels outside [0, {self.num_classes}) and {self.ignore_index}")
        k = self.num_classes
        if (pred[valid] >= k).any() or (pred[valid] < 0).any():
            raise ValueError(f"predictions outside [0, {k}) at labelled pixels")
        idx = label[valid] * k + pred[valid]
        self.confusion += torch.bincount(idx, minlength=k * k).reshape(k, k).cpu()

    def evaluate(self) -> dict:
        """Metrics in percent: IoU and Acc per class (NaN where undefined), mIoU, mAcc, aAcc, and the
        subset means mIoU_tail (19 classes) / mIoU_13 (16 classes). The confusion matrix is summed
        over processes first."""
        conf = comm.all_reduce_sum(self.confusion.clone().to(comm.reduce_device())).cpu().double()
        tp = conf.diag()
        gt, pr = conf.sum(1), conf.sum(0)
        union = gt + pr - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan"))) * 100
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan"))) * 100
        total = conf.sum()
        out = {
            "IoU": iou.tolist(), "Acc": acc.tolist(), "mIoU": _nanmean(iou.tolist()),
            "mAcc": _nanmean(acc.tolist()), "aAcc": (tp.sum() / total * 100).item() if total > 0 else float("nan"),
            "class_names": self.class_names, "num_pixels": int(total.item()),
        }
        if self.num_classes == 19 and self.class_names == list(class_names(19)):
            out["mIoU_tail"] = _nanmean([out["IoU"][i] for i in subset_indices(19, TAIL_CLASSES)])
        if self.num_classes == 16 and self.class_names == list(class_names(16)):
            out["mIoU_13"] = _nanmean([out["IoU"][i] for i in subset_indices(16, CLASSES_13)])
        return out


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def format_table(metrics: dict, tail: Sequence[str] = TAIL_CLASSES) -> str:
    """A per-class text table (IoU, Acc) with tail classes marked by '*', then the summary line."""
    lines = [f"{'class':<14}{'IoU':>8}{'Acc':>8}"]
    for name, iou, acc in zip(metrics["class_names"], metrics["IoU"], metrics["Acc"]):
        mark = "*" if name in tail else " "
        lines.append(f"{name + mark:<14}{iou:>8.2f}{acc:>8.2f}")
    summary = f"mIoU {metrics['mIoU']:.2f}  mAcc {metrics['mAcc']:.2f}  aAcc {metrics['aAcc']:.2f}"
    for key in ("mIoU_tail", "mIoU_13"):
        if key in metrics:
            summary += f"  {key} {metrics[key]:.2f}"
    return "\n".join(lines + [summary, "(* = tail class)"])
