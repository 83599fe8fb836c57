"""`adv_warmup` stage (AdaptSegNet; docs/method.md "Warm-up"): source CE plus output-space
adversarial alignment.

Generator: source CE (logits / LOSS.SOURCE_TEMPERATURE) and ADV_WEIGHT · BCE(D(softmax(target)),
source label 0), with D frozen. Discriminator: 0.5 · BCE(D(source), 0) + 0.5 · BCE(D(target), 1) on
detached softmax maps at input resolution, the source maps softened by the same temperature
(ADV_WARMUP.SOFTEN_SOURCE, as released `warmup.py`); Adam (lr 1e-4, betas 0.9/0.99) on the same
poly schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spcl.losses import SOURCE_DOMAIN, TARGET_DOMAIN, domain_bce, segmentation_ce, upsample_like
from spcl.modeling import build_discriminator

from ..trainer import StageTrainer


class AdvWarmupTrainer(StageTrainer):
    NAME = "adv_warmup"
    NODE = "ADV_WARMUP"

    def build(self):
        self.build_model()
        disc = build_discriminator(self.cfg).to(self.device)
        self.discriminator_without_ddp = self.register_module("discriminator", disc)
        self.discriminator = self.wrap(disc)
        s = self.scfg
        self.register_optimizer("discriminator", torch.optim.Adam(disc.parameters(), lr=s.DISC_LR,
                                                                  betas=tuple(s.DISC_BETAS), fused=self.fused),
                                s.DISC_LR)

    def build_loaders(self, start_iter):
        return {"source": self.source_loader(start_iter), "target": self.target_loader(start_iter)}

    def data_names(self):
        return [(self.cfg.DATASETS.SOURCE, "source"), (self.cfg.DATASETS.TARGET, "target")]

    def run_step(self, batch):
        src, tgt = batch["source"], batch["target"]
        disc = self.discriminator_without_ddp
        self.zero_grad()
        # generator: D is frozen and used unwrapped (its parameters get no gradient here)
        disc.requires_grad_(False)
        with self.autocast(), self.source_bn_stats():
            out_s = self.model(src["image"])
        loss_seg = segmentation_ce(out_s["logits"], src["label"], self.cfg.LOSS.SOURCE_TEMPERATURE)
        self.backward(loss_seg)
        with self.autocast():
            out_t = self.model(tgt["image"])
        prob_t = F.softmax(upsample_like(out_t["logits"].float(), tgt["image"][:, 0]), dim=1)  # B×K×H×W
        with self.autocast():
            loss_adv = self.scfg.ADV_WEIGHT * domain_bce(disc(prob_t), SOURCE_DOMAIN)
        self.backward(loss_adv)
        # discriminator on detached maps; the source maps softened like the source CE (released code)
        disc.requires_grad_(True)
        src_logits = out_s["logits"].detach().float()
        if self.scfg.SOFTEN_SOURCE:
            src_logits = src_logits / self.cfg.LOSS.SOURCE_TEMPERATURE
        prob_s = F.softmax(upsample_like(src_logits, src["image"][:, 0]), dim=1)  # B×K×H×W
        with self.autocast():
            loss_d_src = 0.5 * domain_bce(self.discriminator(prob_s), SOURCE_DOMAIN)
        self.backward(loss_d_src)
        with self.autocast():
            loss_d_tgt = 0.5 * domain_bce(self.discriminator(prob_t.detach()), TARGET_DOMAIN)
        self.backward(loss_d_tgt)
        self.step()
        return {"loss_seg": loss_seg.item(), "loss_adv": loss_adv.item(),
                "loss_d": loss_d_src.item() + loss_d_tgt.item()}
