"""`source_only` stage: source cross-entropy only (the "Source Only" rows of the paper's tables)."""
from __future__ import annotations

from spcl.losses import segmentation_ce

from ..trainer import StageTrainer


class SourceOnlyTrainer(StageTrainer):
    NAME = "source_only"
    NODE = "SOURCE_ONLY"

    def build(self):
        self.build_model()

    def build_loaders(self, start_iter):
        return {"source": self.source_loader(start_iter)}

    def data_names(self):
        return [(self.cfg.DATASETS.SOURCE, "source")]

    def run_step(self, batch):
        src = batch["source"]
        self.zero_grad()
        with self.autocast():
            out = self.model(src["image"])
        loss = segmentation_ce(out["logits"], src["label"], self.cfg.LOSS.SOURCE_TEMPERATURE)
        self.backward(loss)
        self.step()
        return {"loss_seg": loss.item()}
