"""`source_only` stage: source cross-entropy only (the "Source Only" rows of the paper's tables)."""
from __future__ import annotations

from spcl.data import build_dataset, build_train_loader
from spcl.losses import segmentation_ce

from ..trainer import StageTrainer


def build_source_loader(trainer: StageTrainer, start_iter: int):
    """The endless source loader of a stage (class-balanced when DATASETS.CLASS_BALANCE)."""
    cfg = trainer.cfg
    dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=True, role="source")
    return build_train_loader(cfg, dataset, trainer.scfg.SOURCE_BATCH, start_iter, cfg.DATASETS.CLASS_BALANCE)


class SourceOnlyTrainer(StageTrainer):
    NAME = "source_only"
    NODE = "SOURCE_ONLY"

    def build(self):
        self.net = self.build_model()

    def build_loaders(self, start_iter):
        return {"source": build_source_loader(self, start_iter)}

    def run_step(self, batch):
        src = batch["source"]
        self.zero_grad()
        with self.autocast():
            out = self.net(src["image"])
        loss = segmentation_ce(out["logits"], src["label"], self.cfg.LOSS.SOURCE_TEMPERATURE)
        self.backward(loss)
        self.step()
        return {"loss_seg": loss.item()}
