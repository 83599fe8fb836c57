"""`align` stage: SPCL's semantic prototype-based contrastive learning (SPEC §3–§4).

One iteration:
  1. source forward; CE on logits / 1.8; source mask = ground truth at feature resolution
     (optionally minus wrong predictions);
  2. EMA update of the prototype bank with the source features (summed over processes), then
     λ · L_cl^s with the updated prototypes (the released code's order);
  3. target forward; target mask = offline pseudo labels at feature resolution (default) or the
     batch's own confident predictions (`online`); λ · L_cl^t;
  4. one optimiser step. The bank is saved in every checkpoint.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from spcl.losses import PrototypeContrastiveLoss, segmentation_ce
from spcl.prototypes import PrototypeBank, downsample_mask, source_mask
from spcl.pseudo import ClassThresholds

from ..trainer import StageTrainer
from .adv_warmup import build_target_loader
from .source_only import build_source_loader


def load_prototype_file(path: str) -> torch.Tensor:
    """K×C prototypes from a file written by the `prototypes` stage (PROTOTYPE.PATH)."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"prototype file not found: {path!r} (config key PROTOTYPE.PATH; the "
                                "`prototypes` stage writes it)")
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data["prototypes"] if isinstance(data, dict) else data


class AlignTrainer(StageTrainer):
    NAME = "align"
    NODE = "ALIGN"

    def build(self):
        cfg = self.cfg
        self.net = self.build_model()
        bank = PrototypeBank(cfg.MODEL.NUM_CLASSES, self.model.backbone.out_channels, cfg.PROTOTYPE.ALPHA,
                             cfg.PROTOTYPE.ABSENT).to(self.device)
        self.bank = self.register_module("prototype_bank", bank)
        if not self.checkpointer_has_state():
            bank.set(load_prototype_file(cfg.PROTOTYPE.PATH).to(self.device))
        c = cfg.LOSS.CONTRAST
        self.contrast = PrototypeContrastiveLoss(c.TEMPERATURE)
        self.online = ClassThresholds(cfg.MODEL.NUM_CLASSES, cfg.PSEUDO.THRESHOLD_CAP, 1000)

    def checkpointer_has_state(self) -> bool:
        return os.path.isfile(os.path.join(self.output_dir, "checkpoints", "last_checkpoint"))

    def build_loaders(self, start_iter):
        loaders = {"source": build_source_loader(self, start_iter)}
        if self.cfg.LOSS.CONTRAST.TARGET:
            offline = self.cfg.ALIGN.TARGET_MASK == "offline"
            loaders["target"] = build_target_loader(self, start_iter, "cityscapes_pseudo" if offline else "")
        return loaders

    def target_mask(self, tgt: dict, logits: torch.Tensor) -> torch.Tensor:
        """B×h×w target mask: pseudo labels (offline) or confident batch predictions (online)."""
        size = tuple(logits.shape[-2:])
        if self.cfg.ALIGN.TARGET_MASK == "offline":
            return downsample_mask(tgt["label"], size)
        self.online.reset()
        probs = F.softmax(logits.detach().float(), dim=1)
        self.online.update(probs)
        return self.online.label(probs, self.online.compute_bins())

    def run_step(self, batch):
        cfg, src = self.cfg, batch["source"]
        lam = cfg.LOSS.CONTRAST.WEIGHT
        self.zero_grad()
        with self.autocast():
            out_s = self.net(src["image"])
        loss_seg = segmentation_ce(out_s["logits"], src["label"], cfg.LOSS.SOURCE_TEMPERATURE)
        mask_s = source_mask(src["label"], out_s["logits"].detach(), cfg.PROTOTYPE.SOURCE_MASK)
        before = self.bank.prototypes.clone()
        self.bank.update(out_s["feat"].detach(), mask_s)
        drift = (self.bank.prototypes - before).norm(dim=1).mean().item()
        logs = {"loss_seg": loss_seg.item(), "proto_drift": drift}
        loss = loss_seg
        if cfg.LOSS.CONTRAST.SOURCE:
            loss_cl_s = self.contrast(out_s["feat"], mask_s, self.bank.prototypes)
            loss = loss + lam * loss_cl_s
            logs["loss_cl_src"] = loss_cl_s.item()
        self.backward(loss)
        if cfg.LOSS.CONTRAST.TARGET:
            tgt = batch["target"]
            with self.autocast():
                out_t = self.net(tgt["image"])
            mask_t = self.target_mask(tgt, out_t["logits"])
            loss_cl_t = self.contrast(out_t["feat"], mask_t, self.bank.prototypes)
            self.backward(lam * loss_cl_t)
            logs["loss_cl_tgt"] = loss_cl_t.item()
            logs["target_kept"] = (mask_t != 255).float().mean().item()
        self.step()
        return logs
