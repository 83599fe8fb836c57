"""Data: label maps, the datasets (docs/method.md "Datasets"), paired transforms, samplers and their
builders. The generated toy data is written by the separate `spcl.toy` package, never imported here."""
from .build import CATALOG, build_dataset, build_test_loader, build_train_loader, build_transform

__all__ = ["CATALOG", "build_dataset", "build_transform", "build_train_loader", "build_test_loader"]
