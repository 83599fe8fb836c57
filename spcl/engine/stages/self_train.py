"""`self_train` stage (SPEC §6): target cross-entropy on pseudo labels, trainable BatchNorm, random
scale/crop/flip/jitter of the target images (INPUT.SELF_TRAIN_*)."""
from __future__ import annotations

from spcl.data import build_dataset, build_train_loader
from spcl.losses import segmentation_ce

from ..trainer import StageTrainer


class SelfTrainTrainer(StageTrainer):
    NAME = "self_train"
    NODE = "SELF_TRAIN"

    def build(self):
        self.net = self.build_model(freeze_bn=self.cfg.SELF_TRAIN.FREEZE_BN)

    def build_loaders(self, start_iter):
        dataset = build_dataset(self.cfg, "cityscapes_pseudo", train=True, role="self_train")
        return {"target": build_train_loader(self.cfg, dataset, self.scfg.TARGET_BATCH, start_iter)}

    def run_step(self, batch):
        tgt = batch["target"]
        self.zero_grad()
        with self.autocast():
            out = self.net(tgt["image"])
        loss = segmentation_ce(out["logits"], tgt["label"])
        self.backward(loss)
        self.step()
        return {"loss_seg_tgt": loss.item()}
