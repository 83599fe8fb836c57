"""Pseudo labels (paper Eq. 5): streaming class thresholds and the one-pass label writer."""
from .confusion import most_confused_with
from .generate import ImageBatches, generate_pseudo_labels
from .thresholds import ClassThresholds

__all__ = ["ClassThresholds", "ImageBatches", "generate_pseudo_labels", "most_confused_with"]
