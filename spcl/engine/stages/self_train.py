"""`self_train` stage (paper Sec. 3.4; docs/method.md "Self-training"): target cross-entropy on
pseudo labels, trainable BatchNorm, random scale/crop/flip/jitter of the target images
(INPUT.SELF_TRAIN_*)."""
from __future__ import annotations

from spcl.losses import segmentation_ce

from ..trainer import StageTrainer


class SelfTrainTrainer(StageTrainer):
    NAME = "self_train"
    NODE = "SELF_TRAIN"

    def build(self):
        self.build_model(freeze_bn=self.cfg.SELF_TRAIN.FREEZE_BN)

    def build_loaders(self, start_iter):
        return {"target": self.target_loader(start_iter, "cityscapes_pseudo", role="self_train")}

    def data_names(self):
        return ["cityscapes_pseudo"]

    def run_step(self, batch):
        tgt = batch["target"]
        self.zero_grad()
        with self.autocast():
            out = self.model(tgt["image"])
        loss = segmentation_ce(out["logits"], tgt["label"])
        self.backward(loss)
        self.step()
        return {"loss_seg_tgt": loss.item()}
