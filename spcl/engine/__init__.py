"""Training engine: the shared stage loop, checkpointing, stage trainers, the pipeline and launch."""
from .launch import init_distributed, launch
from .pipeline import STAGES, run_pipeline, run_stage
from .stages import TRAINERS
from .trainer import StageTrainer

__all__ = ["STAGES", "TRAINERS", "StageTrainer", "run_pipeline", "run_stage", "init_distributed", "launch"]
