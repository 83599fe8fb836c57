"""The six stages of the pipeline, by name. Each is `Stage(cfg, output_dir, device)` (builds,
writes nothing) with `run()` → {"outputs", "metrics", …}: four training stages on the shared
loop (StageTrainer) and two inference stages (InferenceStage)."""
from .adv_warmup import AdvWarmupTrainer
from .align import AlignTrainer
from .offline import InferenceStage
from .prototypes import PrototypesStage
from .pseudo_labels import PseudoLabelsStage
from .self_train import SelfTrainTrainer
from .source_only import SourceOnlyTrainer

TRAINERS = {t.NAME: t for t in (SourceOnlyTrainer, AdvWarmupTrainer, AlignTrainer, SelfTrainTrainer)}
STAGES = {**TRAINERS, PrototypesStage.NAME: PrototypesStage, PseudoLabelsStage.NAME: PseudoLabelsStage}

__all__ = ["STAGES", "TRAINERS", "InferenceStage", "SourceOnlyTrainer", "AdvWarmupTrainer", "AlignTrainer",
           "SelfTrainTrainer", "PrototypesStage", "PseudoLabelsStage"]
