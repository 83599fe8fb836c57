"""`align` stage: SPCL's semantic prototype-based contrastive learning (paper Sec. 3.2-3.3,
Eq. 3-6; docs/method.md "Align").

One iteration:
  1. source forward; CE on logits / LOSS.SOURCE_TEMPERATURE; source mask = ground truth at feature
     resolution (optionally minus wrong predictions);
  2. EMA update of the prototype bank with the source features (summed over processes), then
     λ · L_cl^s with the updated prototypes (the released code's order);
  3. target forward; target mask = offline pseudo labels at feature resolution (default) or the
     batch's own confident predictions (`online`); λ · L_cl^t;
  4. one optimiser step. The bank is saved in every checkpoint.

Every SOLVER.LOG_PERIOD iterations it also logs how hard each term pulls on the encoder: the norm of
the gradient that reaches the feature map F from L_seg (source), from λ·L_cl^s (source) and from
λ·L_cl^t (target), and the ratios grad_ratio_src/tgt = ‖∂(λ·L_cl)/∂F‖ / ‖∂L_seg/∂F‖. A ratio near 0
means the contrastive term does not move the features (at τ = 100 it is about 1/100 of a
unit-temperature CE).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from spcl.data.labels import IGNORE_LABEL
from spcl.losses import PrototypeContrastiveLoss, segmentation_ce
from spcl.prototypes import PrototypeBank, downsample_mask, load_prototype_file, source_mask
from spcl.pseudo import ClassThresholds

from ..trainer import StageTrainer


class AlignTrainer(StageTrainer):
    NAME = "align"
    NODE = "ALIGN"

    def build(self):
        cfg = self.cfg
        # the target term's backward reaches the encoder only: the head is unused in that pass
        self.build_model(find_unused=cfg.LOSS.CONTRAST.TARGET)
        bank = PrototypeBank(cfg.MODEL.NUM_CLASSES, self.model_without_ddp.backbone.out_channels,
                             cfg.PROTOTYPE.ALPHA, cfg.PROTOTYPE.ABSENT).to(self.device)
        self.bank = self.register_module("prototype_bank", bank)
        if self.resume_from is None:  # a resumed bank comes from the checkpoint
            bank.set(load_prototype_file(cfg.PROTOTYPE.PATH, (bank.num_classes, bank.dim)).to(self.device))
        c = cfg.LOSS.CONTRAST
        self.contrast = PrototypeContrastiveLoss(c.TEMPERATURE, normalize_prototypes=c.NORMALIZE_PROTOTYPES)
        self.online = ClassThresholds(cfg.MODEL.NUM_CLASSES, cfg.PSEUDO.THRESHOLD_CAP, 1000)

    def build_loaders(self, start_iter):
        loaders = {"source": self.source_loader(start_iter)}
        if self.cfg.LOSS.CONTRAST.TARGET:
            offline = self.cfg.ALIGN.TARGET_MASK == "offline"
            loaders["target"] = self.target_loader(start_iter, "cityscapes_pseudo" if offline else "", role="target")
        return loaders

    def data_names(self):
        names = [(self.cfg.DATASETS.SOURCE, "source")]
        if self.cfg.LOSS.CONTRAST.TARGET:
            names.append("cityscapes_pseudo" if self.cfg.ALIGN.TARGET_MASK == "offline"
                         else (self.cfg.DATASETS.TARGET, "target"))
        return names

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
        measure = self.measure_gradients()
        self.zero_grad()
        with self.autocast(), self.source_bn_stats(), backbone_output(self.model_without_ddp, measure) as feat_s:
            out_s = self.model(src["image"])
        loss_seg = segmentation_ce(out_s["logits"], src["label"], cfg.LOSS.SOURCE_TEMPERATURE)
        mask_s = source_mask(src["label"], out_s["logits"].detach(), cfg.PROTOTYPE.SOURCE_MASK)  # B×h×w
        before = self.bank.prototypes.clone()
        self.bank.update(out_s["feat"].detach(), mask_s)
        drift = (self.bank.prototypes - before).norm(dim=1).mean().item()
        logs = {"loss_seg": loss_seg.item(), "proto_drift": drift}
        if measure:
            logs["grad_feat_seg"] = feature_grad_norm(loss_seg, feat_s[0])
        loss = loss_seg
        if cfg.LOSS.CONTRAST.SOURCE:
            loss_cl_s = self.contrast(out_s["feat"], mask_s, self.bank.prototypes)
            loss = loss + lam * loss_cl_s
            logs["loss_cl_src"] = loss_cl_s.item()
            if measure:
                logs["grad_feat_cl_src"] = feature_grad_norm(lam * loss_cl_s, feat_s[0])
        self.backward(loss)
        if cfg.LOSS.CONTRAST.TARGET:
            tgt = batch["target"]
            with self.autocast(), backbone_output(self.model_without_ddp, measure) as feat_t:
                out_t = self.model(tgt["image"])
            mask_t = self.target_mask(tgt, out_t["logits"])  # B×h×w
            loss_cl_t = self.contrast(out_t["feat"], mask_t, self.bank.prototypes)
            if measure:
                logs["grad_feat_cl_tgt"] = feature_grad_norm(lam * loss_cl_t, feat_t[0])
            self.backward(lam * loss_cl_t)
            logs["loss_cl_tgt"] = loss_cl_t.item()
            logs["target_kept"] = (mask_t != IGNORE_LABEL).float().mean().item()
        self.step()
        if measure:
            for term in ("src", "tgt"):
                if f"grad_feat_cl_{term}" in logs:
                    logs[f"grad_ratio_{term}"] = logs[f"grad_feat_cl_{term}"] / max(logs["grad_feat_seg"], 1e-20)
        return logs


@contextlib.contextmanager
def backbone_output(model: torch.nn.Module, enabled: bool = True):
    """Inside the block, the list it yields receives the feature map F (B×C×h×w) that `model.backbone`
    computes, as a tensor of the model's own graph. The gradient norms must be taken on this tensor, not on
    the model's `feat` output: DDP with find_unused_parameters passes its outputs through an autograd node
    of its own (_DDPSink), so under several processes the logits no longer depend on that `feat`, and
    ∂L_seg/∂feat came out 0 (grad_ratio ~1e16)."""
    seen: list = []
    handle = model.backbone.register_forward_hook(lambda m, i, out: seen.append(out)) if enabled else None
    try:
        yield seen
    finally:
        if handle is not None:
            handle.remove()


def feature_grad_norm(loss: torch.Tensor, feat: torch.Tensor) -> float:
    """‖∂loss/∂feat‖ (Frobenius, over the whole B×C×h×w map), without touching parameter gradients."""
    (grad,) = torch.autograd.grad(loss, feat, retain_graph=True, allow_unused=True)
    return 0.0 if grad is None else grad.float().norm().item()
