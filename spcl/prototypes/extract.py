"""Prototype initialisation from the source set (paper Eq. 2, docs/method.md "Prototypes"), used by the `prototypes`
stage: the mean of the normalised source pixel features of each class, pixel-weighted over the whole
set (`pixel_mean`, paper) or the mean of per-image class means (`image_mean`, released code)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from spcl.data.labels import IGNORE_LABEL
from spcl.utils import comm
from spcl.utils.io import where_read

from .ops import class_feature_sums, class_means, downsample_mask


def source_mask(label: torch.Tensor, logits: Optional[torch.Tensor], mode: str = "gt") -> torch.Tensor:
    """Source mask at feature resolution (paper Sec. 3.2).

    Args:
        label: B×H×W ground truth.
        logits: B×K×h×w (needed for `gt_and_pred`).
        mode: "gt" (label nearest-downsampled) or "gt_and_pred" (pixels predicted wrongly → 255).
    Returns:
        B×h×w int64.
    """
    size = tuple(logits.shape[-2:])
    mask = downsample_mask(label, size).to(logits.device)
    if mode == "gt_and_pred":
        mask = torch.where(logits.argmax(1) == mask, mask, torch.full_like(mask, IGNORE_LABEL))
    elif mode != "gt":
        raise ValueError(f"PROTOTYPE.SOURCE_MASK must be gt or gt_and_pred, got {mode!r}")
    return mask


@torch.no_grad()
def compute_source_prototypes(model, loader, num_classes: int, device: torch.device, init: str = "pixel_mean",
                              mask_mode: str = "gt", state: Optional[dict] = None,
                              save: Optional[Callable[[dict], None]] = None) -> dict:
    """Initial prototypes from a source loader (items with `image`, `label`).

    Args:
        state: this process's running sums of an interrupted pass, {"total": K×C, "counts": K, "images": n}
            (as `save` received them); `loader` then starts after those n images of its share.
        save: called after every batch with the running sums (CPU copies are the caller's to make); the
            caller decides when to write them.
    Returns:
        {"prototypes": K×C, "counts": K pixels (pixel_mean) or images (image_mean) per class}.
        Classes never seen get a zero prototype. Sums are reduced over processes.
    """
    if init not in ("pixel_mean", "image_mean"):
        raise ValueError(f"PROTOTYPE.INIT must be pixel_mean or image_mean, got {init!r}")
    model.eval()
    total, counts, images = None, None, 0
    if state is not None:
        total, counts, images = state["total"].to(device), state["counts"].to(device), int(state["images"])
    for batch in loader:
        out = model(batch["image"].to(device))
        feat, logits = out["feat"].float(), out["logits"]
        mask = source_mask(batch["label"], logits, mask_mode)
        if init == "pixel_mean":
            sums, cnt = class_feature_sums(feat, mask, num_classes)
        else:  # one mean per image and class, then averaged over the images holding the class
            sums = torch.zeros(num_classes, feat.shape[1], device=feat.device)
            cnt = torch.zeros(num_classes, device=feat.device)
            for i in range(feat.shape[0]):
                s, c = class_feature_sums(feat[i:i + 1], mask[i:i + 1], num_classes)
                sums += class_means(s, c)
                cnt += (c > 0).float()
        total = sums if total is None else total + sums
        counts = cnt if counts is None else counts + cnt
        images += feat.shape[0]
        if save is not None:
            save({"total": total, "counts": counts, "images": images})
    if total is None:
        raise ValueError("no source images to compute prototypes from")
    packed = comm.all_reduce_sum(torch.cat([total, counts[:, None]], dim=1))
    total, counts = packed[:, :-1], packed[:, -1]
    return {"prototypes": class_means(total, counts).cpu(), "counts": counts.cpu()}


def load_prototype_file(path: str, shape: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """K×C prototypes from a file written by the `prototypes` stage (config key PROTOTYPE.PATH): a tensor,
    or a dict holding it under "prototypes". With `shape` (K, C) the file must match it; every error names
    the file."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"prototype file not found: {path!r}{where_read(path)} (config key PROTOTYPE.PATH; "
                                "the `prototypes` stage writes it)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error means an unusable file
        text = str(e).strip()
        if "Weights only load failed" in text:  # torch's many lines: objects a tensor file does not hold
            raise IOError(f"cannot read prototype file {path}: it holds Python objects besides tensors, as a model "
                          "checkpoint does; PROTOTYPE.PATH takes the prototypes.pth the `prototypes` stage (or "
                          "tools/gen_pseudo.py --prototypes) writes") from e
        raise IOError(f"cannot read prototype file {path}: {text.splitlines()[0] if text else type(e).__name__}") from e
    protos = data.get("prototypes") if isinstance(data, dict) else data
    if not isinstance(protos, torch.Tensor) or protos.dim() != 2:
        what = f"a dict with keys {sorted(data)[:8]}" if isinstance(data, dict) else type(data).__name__
        if isinstance(data, dict) and "model" in data:
            what = "a model checkpoint, not prototypes"
        raise ValueError(f"prototype file {path} holds {what}; expected a K×C tensor, or a dict with one under "
                         "'prototypes' (as the `prototypes` stage and tools/gen_pseudo.py --prototypes write)")
    if shape is not None and tuple(protos.shape) != tuple(shape):
        raise ValueError(f"prototype file {path} holds {tuple(protos.shape)} prototypes; this model needs "
                         f"{tuple(shape)} (MODEL.NUM_CLASSES × the backbone's feature channels): written for "
                         "another backbone or class setting?")
    if not torch.isfinite(protos).all():  # else align stops later as "diverged … lower the lr", which it is not
        rows = (~torch.isfinite(protos)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"prototype file {path} holds NaN or Inf in the rows of class(es) {rows[:8]}"
                         f"{' …' if len(rows) > 8 else ''}: the model it was computed from had diverged, or the "
                         "file was damaged; write it again (the `prototypes` stage, or tools/gen_pseudo.py "
                         "--prototypes) from a model whose loss is finite")
    return protos
