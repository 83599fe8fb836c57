"""Evaluation: confusion-matrix metrics (mIoU, tail, 13-class), inference over a loader,
`evaluate_checkpoint`, the one way to score a trained model, `segment_image`, the one way to label a
single image array, and sliding-window inference."""
from .evaluator import SemSegEvaluator, format_table
from .inference import (evaluate_checkpoint, preprocess_image, run_inference, save_prediction, segment_image,
                        segment_images, unique_output_dir, write_legend)
from .sliding import sliding_from_cfg, sliding_logits, sliding_window, window_starts

__all__ = ["SemSegEvaluator", "format_table", "evaluate_checkpoint", "run_inference", "segment_image",
           "segment_images", "preprocess_image", "save_prediction", "write_legend", "unique_output_dir",
           "sliding_window", "sliding_logits", "sliding_from_cfg", "window_starts"]
