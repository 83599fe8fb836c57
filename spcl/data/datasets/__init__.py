"""Dataset classes, one small subclass per domain of docs/method.md "Datasets", and the catalog of names."""
from .base import SegmentationDataset, list_images, read_list_file
from .cityscapes import CityscapesDataset, CityscapesPseudoDataset
from .folder import FolderDataset, PseudoLabelDataset, find_images, id_map_lut
from .gta5 import GTA5Dataset
from .synscapes import SynscapesDataset
from .synthia import SynthiaDataset

__all__ = ["SegmentationDataset", "GTA5Dataset", "SynthiaDataset", "SynscapesDataset",
           "CityscapesDataset", "CityscapesPseudoDataset", "FolderDataset", "PseudoLabelDataset", "find_images",
           "id_map_lut", "list_images", "read_list_file"]
