"""The stage trainers, by stage name."""
from .adv_warmup import AdvWarmupTrainer
from .align import AlignTrainer
from .self_train import SelfTrainTrainer
from .source_only import SourceOnlyTrainer

TRAINERS = {t.NAME: t for t in (SourceOnlyTrainer, AdvWarmupTrainer, AlignTrainer, SelfTrainTrainer)}

__all__ = ["TRAINERS", "SourceOnlyTrainer", "AdvWarmupTrainer", "AlignTrainer", "SelfTrainTrainer"]
