"""Dataset classes, one small subclass per domain of docs/method.md "Datasets", and the catalog of names."""
from .base import SegmentationDataset, list_images, read_list_file
from .cityscapes import CityscapesDataset, CityscapesPseudoDataset
from .gta5 import GTA5Dataset
from .synscapes import SynscapesDataset
from .synthia import SynthiaDataset

__all__ = ["SegmentationDataset", "GTA5Dataset", "SynthiaDataset", "SynscapesDataset",
           "CityscapesDataset", "CityscapesPseudoDataset", "list_images", "read_list_file"]
