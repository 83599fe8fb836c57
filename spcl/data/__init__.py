"""Data: label maps, datasets of SPEC §7, paired transforms, samplers and their builders."""
from .build import (CATALOG, build_dataset, build_test_loader, build_train_loader, build_transform,
                    prepare_data)

__all__ = ["CATALOG", "build_dataset", "build_transform", "build_train_loader", "build_test_loader",
           "prepare_data"]
