"""Folders searched recursively (`spcl.data.io.files_below`, used by every dataset's image search and by
tools/infer.py) follow symlinked sub-folders: a Cityscapes city or a folder-domain sub-folder that is a link
to another disk is read, a link cycle ends, and a folder reached twice lists its images once."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from spcl.config import load_config
from spcl.data import build_dataset
from spcl.data.io import files_below, write_label_png
from spcl.data.labels import labelid_to_trainid_lut

W, H = 32, 16


def _image(path, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def linked_tree(tmp_path):
    """root/: r.png, city -> ../elsewhere/city (a.png, b.png), loop -> root (a cycle), sub/s.png with
    sub/again -> root/city (a folder reached a second time)."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere" / "city"
    for path in (root / "r.png", elsewhere / "a.png", elsewhere / "b.png", root / "sub" / "s.png"):
        _image(str(path))
    os.symlink(elsewhere, root / "city")
    os.symlink(root, root / "loop")
    os.symlink(root / "city", root / "sub" / "again")
    return root


def test_symlinked_folders_are_searched_once_and_a_cycle_ends(tmp_path):
    root = linked_tree(tmp_path)
    assert files_below(str(root)) == ["r.png", os.path.join("city", "a.png"), os.path.join("city", "b.png"),
                                      os.path.join("sub", "s.png")]
    # the folder given may itself be a link
    os.symlink(root, tmp_path / "root_link")
    assert files_below(str(tmp_path / "root_link")) == files_below(str(root))


def test_a_folder_dataset_reads_images_in_symlinked_sub_folders(tmp_path):
    root = linked_tree(tmp_path)
    cfg = load_config("", ["DATASETS.FOLDER.TRAIN_DIR", str(root), "DATASETS.TARGET", "folder_train",
                           "INPUT.TEST_SIZE", f"[{W}, {H}]", "DATALOADER.NUM_WORKERS", "0"])
    ds = build_dataset(cfg, "folder_train", train=False)
    assert [os.path.relpath(p, root) for p, _ in ds.items] == sorted(files_below(str(root)))
    assert sorted(ds.names) == ["city__a.png", "city__b.png", "r.png", "sub__s.png"]
    assert ds[1]["image"].shape == (3, H, W)


def test_a_cityscapes_city_that_is_a_symlink_is_read_with_its_labels(tmp_path):
    """leftImg8bit/val/aachen is a link to another disk; gtFine/val/aachen is a real folder."""
    store, data = tmp_path / "store" / "aachen", tmp_path / "data" / "cityscapes"
    ids = np.random.default_rng(1).choice([7, 8, 11, 26], size=(H, W)).astype(np.uint8)
    for i in range(2):
        _image(str(store / f"aachen_00000{i}_000019_leftImg8bit.png"), seed=i)
        write_label_png(str(data / "gtFine" / "val" / "aachen" / f"aachen_00000{i}_000019_gtFine_labelIds.png"),
                        ids)
    os.makedirs(data / "leftImg8bit" / "val")
    os.symlink(store, data / "leftImg8bit" / "val" / "aachen")
    cfg = load_config("", ["DATASETS.DATA_DIR", str(tmp_path / "data"), "INPUT.TEST_SIZE", f"[{W}, {H}]",
                           "DATALOADER.NUM_WORKERS", "0"])
    ds = build_dataset(cfg, "cityscapes_val", train=False)
    assert ds.labels == "required" and len(ds) == 2
    item = ds[1]
    assert item["name"] == "aachen_000001_000019_leftImg8bit.png"
    np.testing.assert_array_equal(item["label"].numpy(), labelid_to_trainid_lut(19)[ids])
