"""Class prototypes (paper Sec. 3.2): pixel-feature operations, the EMA bank (Eq. 3) and the
source-set initialisation (Eq. 2)."""
from .bank import PrototypeBank
from .extract import compute_source_prototypes, load_prototype_file, source_mask
from .ops import class_feature_sums, class_means, downsample_mask, normalize_pixels

__all__ = ["PrototypeBank", "class_feature_sums", "class_means", "downsample_mask", "normalize_pixels",
           "compute_source_prototypes", "load_prototype_file", "source_mask"]
