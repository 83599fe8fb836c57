"""Evaluation: confusion-matrix metrics (mIoU, tail, 13-class), inference over a loader, and
`evaluate_checkpoint`, the one way to score a trained model."""
from .evaluator import SemSegEvaluator, format_table
from .inference import evaluate_checkpoint, run_inference

__all__ = ["SemSegEvaluator", "format_table", "evaluate_checkpoint", "run_inference"]
