"""Class prototypes (SPEC §3): the bank with its EMA update, and source-set initialisation."""
from .bank import PrototypeBank, class_feature_sums, downsample_mask
from .extract import compute_source_prototypes, source_mask

__all__ = ["PrototypeBank", "class_feature_sums", "downsample_mask", "compute_source_prototypes", "source_mask"]
