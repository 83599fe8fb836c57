"""Evaluation: confusion-matrix metrics (mIoU, tail, 13-class) and inference over a loader."""
from .evaluator import SemSegEvaluator, format_table
from .inference import predict_probs, run_inference

__all__ = ["SemSegEvaluator", "format_table", "predict_probs", "run_inference"]
