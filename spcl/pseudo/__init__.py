"""Pseudo labels (paper Eq. 5): streaming class thresholds and the one-pass label writer."""
from .confusion import most_confused_with
from .generate import generate_pseudo_labels
from .thresholds import ClassThresholds

__all__ = ["ClassThresholds", "generate_pseudo_labels", "most_confused_with"]
