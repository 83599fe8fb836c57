"""Pseudo labels (SPEC §5): streaming class thresholds and the one-pass label writer."""
from .generate import generate_pseudo_labels
from .thresholds import ClassThresholds, exact_thresholds

__all__ = ["ClassThresholds", "exact_thresholds", "generate_pseudo_labels"]
