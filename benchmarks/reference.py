"""Plain reference implementations of the released SPCL algorithm, the baselines of the benchmarks.

Provenance: written for this project from paper Eq. 3–5 (docs/method.md "Prototypes", "Contrastive loss",
"Pseudo labels") and the released SPCL code
(github.com/BinhuiXie/SPCL): the prototype update of `train_ours.py`, the contrastive loss of
`core/utils/loss.py` and the thresholds of `core/utils/pseudo_label.py`, reproduced with the same
operations (per-class Python loops, boolean masks repeated over all channels, normalised and
transposed copies of the feature maps, whole-dataset arrays grown with `np.append` and sorted per
class, two model passes for pseudo labels). Nothing in `spcl/` imports this file; it exists so that
every benchmark measures this project against the released algorithm in the same run, and so that
`tests/benchmarks/test_reference_equivalence.py` can check both give the same numbers.

Prototypes are K×C here, as in `spcl.prototypes.PrototypeBank` (the released loss multiplies by the
C×K transpose).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------- prototype EMA update (paper Eq. 3; docs/method.md "Prototypes")
@torch.no_grad()
def reference_prototype_update(prototypes: torch.Tensor, src_feat: torch.Tensor, src_mask: torch.Tensor,
                               alpha: float = 0.1, absent: str = "decay", ignore_index: int = 255) -> torch.Tensor:
    """One EMA step as `train_ours.py` does it; returns the new K×C prototypes.

    Args:
        prototypes: K×C current prototypes.
        src_feat: N×C×H×W raw source features.
        src_mask: N×H×W labels at feature resolution (`ignore_index` ignored).
        absent: "decay" (released: a class absent from the batch has batch mean 0, so its prototype
            shrinks ×alpha) or "keep" (paper; the option this project defaults to).
    """
    N, C, H, W = src_feat.shape
    K = prototypes.shape[0]
    feat = F.normalize(src_feat.detach().clone(), dim=1)
    feat = feat.transpose(1, 2).transpose(2, 3).contiguous()  # N×H×W×C
    current = torch.zeros_like(prototypes)
    present = torch.zeros(K, dtype=torch.bool)
    for k in src_mask.unique():
        k = int(k)
        if k == ignore_index:
            continue
        mask_k = src_mask == k
        feat_k = feat[mask_k.view(N, H, W, 1).repeat(1, 1, 1, C)].view(-1, C)
        current[k] = feat_k.mean(0)
        present[k] = True
    new = alpha * prototypes + (1.0 - alpha) * current
    if absent == "keep":
        new = torch.where(present[:, None], new, prototypes)
    elif absent != "decay":
        raise ValueError(absent)
    return new


# ------------------------------------- contrastive loss (paper Eq. 4; docs/method.md "Contrastive loss")
def reference_contrastive_loss(feat: torch.Tensor, mask: torch.Tensor, prototypes: torch.Tensor,
                               temperature: float = 100.0, ignore_index: int = 255) -> torch.Tensor:
    """`core/utils/loss.py`: normalise, N×H×W×C copy, mm with the C×K prototypes / τ, CE."""
    N, C, H, W = feat.shape
    feat = F.normalize(feat, dim=1)
    feat = feat.transpose(1, 2).transpose(2, 3).contiguous().view(-1, C)  # NHW×C
    logits = feat.mm(prototypes.detach().t()) / temperature  # NHW×K
    return nn.CrossEntropyLoss(ignore_index=ignore_index)(logits, mask.reshape(-1).long())


# ------------------------------------------------------------------ paper Eq. 5: class thresholds
def released_thresholds(conf: np.ndarray, pred: np.ndarray, num_classes: int, cap: float = 0.9) -> np.ndarray:
    """The released rule on all confidences at once (`core/utils/pseudo_label.py`): per class the
    element round(n/2) (numpy's round-half-even) of the sorted confidences of the pixels predicted
    as it, capped at `cap`; 0 for a class never predicted. The one reference the tests use."""
    conf, pred = np.asarray(conf).reshape(-1), np.asarray(pred).reshape(-1)
    thres = []
    for k in range(num_classes):
        x = np.sort(conf[pred == k])
        thres.append(float(x[int(np.round(len(x) * 0.5))]) if len(x) else 0.0)
    thres = np.array(thres, dtype=np.float64)
    thres[thres > cap] = cap
    return thres


class ReferenceThresholds:
    """`core/utils/pseudo_label.py`: every max-softmax confidence and argmax label of the target set
    appended to two growing arrays, then per class the element round(n/2) of the sorted values,
    capped; 0 for a class never predicted."""

    def __init__(self, num_classes: int, cap: float = 0.9):
        self.num_classes, self.cap = num_classes, cap
        self.pred_conf = np.array([], dtype=np.float32)
        self.pred_label = np.array([], dtype=np.int64)

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        conf, label = probs.max(dim=1)
        self.pred_conf = np.append(self.pred_conf, conf.cpu().numpy().reshape(-1))
        self.pred_label = np.append(self.pred_label, label.cpu().numpy().reshape(-1))

    def compute(self) -> np.ndarray:
        return released_thresholds(self.pred_conf, self.pred_label, self.num_classes, self.cap)

    @staticmethod
    def label(probs: torch.Tensor, thresholds: np.ndarray) -> torch.Tensor:
        """Second pass: argmax where the confidence reaches its class threshold, else 255."""
        conf, pred = probs.max(dim=1)
        thr = torch.as_tensor(thresholds, dtype=torch.float64)[pred]
        return torch.where(conf.double() >= thr, pred, torch.full_like(pred, 255))


# ---------------------------------------------------------------------------------- evaluation
def reference_intersection_union(output: torch.Tensor, target: torch.Tensor, num_classes: int,
                                 ignore_index: int = 255):
    """`intersectionAndUnionGPU` of the released code (semseg style): histograms of the
    intersection, the prediction and the target; returns (intersection, union, target) per class."""
    output = output.reshape(-1).clone()
    target = target.reshape(-1)
    output[target == ignore_index] = ignore_index
    intersection = output[output == target]
    area_intersection = torch.histc(intersection.float(), bins=num_classes, min=0, max=num_classes - 1)
    # values outside [0, K-1] (the ignore index) fall outside histc's range and are not counted
    area_output = torch.histc(output.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_target = torch.histc(target.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_union = area_output + area_target - area_intersection
    return area_intersection, area_union, area_target


# ----------------------- pseudo labels, two passes (paper Eq. 5; docs/method.md "Pseudo labels")
@torch.no_grad()
def reference_pseudo_labels(model, loader, output_dir: str, num_classes: int, device: torch.device,
                            cap: float = 0.9) -> np.ndarray:
    """The released flow: a first pass over the target set collecting every confidence
    (`ReferenceThresholds`), thresholds by sorting, then a second model pass writing the labels."""
    import os

    from spcl.data.io import write_label_png
    from spcl.evaluation.inference import predict_probs

    model.eval()
    stats = ReferenceThresholds(num_classes, cap)
    for batch in loader:
        images = batch["image"].to(device)
        stats.update(predict_probs(model, images, tuple(images.shape[-2:])))
    thresholds = stats.compute()
    os.makedirs(output_dir, exist_ok=True)
    for batch in loader:
        images = batch["image"].to(device)
        labels = ReferenceThresholds.label(predict_probs(model, images, tuple(images.shape[-2:])), thresholds)
        for name, label in zip(batch["name"], labels.cpu().numpy().astype(np.uint8)):
            write_label_png(os.path.join(output_dir, name), label)
    return thresholds
