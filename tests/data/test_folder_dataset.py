"""The generic folder domain (folder_train / folder_val, DATASETS.FOLDER.*), the pseudo-labelled
dataset on a folder target, and cityscapes_test (no labels, placeholders at the image's own size)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from spcl.config import load_config
from spcl.data import CATALOG, build_dataset
from spcl.data.datasets.folder import find_images, flat_name, id_map_lut

W, H = 32, 16


def _save_rgb(path, size=(W, H), mode="RGB", seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)


def make_tree(root):
    """train/: three images in sub-folders (one JPEG, one greyscale, one RGBA) + a text file;
    val/ and labels/: two images with raw-id labels (values 3, 9, 200)."""
    _save_rgb(str(root / "train" / "a" / "x.png"))
    _save_rgb(str(root / "train" / "b" / "x.jpg"), size=(40, 20), seed=1)
    _save_rgb(str(root / "train" / "b" / "c" / "grey.png"), mode="L", seed=2)
    _save_rgb(str(root / "train" / "rgba.PNG"), mode="RGBA", seed=3)
    (root / "train" / "notes.txt").write_text("not an image")
    raw = np.array([[3, 9, 200, 255]] * 4, dtype=np.uint8).repeat(8, axis=1)  # 4×32
    raw = np.concatenate([raw] * 4)  # 16×32
    for i, name in enumerate(["v1", "sub/v2"]):
        _save_rgb(str(root / "val" / f"{name}.jpg"), seed=10 + i)
        os.makedirs(os.path.dirname(str(root / "labels" / f"{name}_ids.png")), exist_ok=True)
        Image.fromarray(raw).save(str(root / "labels" / f"{name}_ids.png"))
    return raw


def cfg_for(root, *opts):
    return load_config("", ["DATASETS.FOLDER.TRAIN_DIR", str(root / "train"), "DATASETS.FOLDER.VAL_DIR",
                            str(root / "val"), "DATASETS.TARGET", "folder_train", "DATASETS.TEST", "folder_val",
                            "INPUT.TEST_SIZE", f"[{W}, {H}]", "INPUT.TARGET_SIZE", f"[{W}, {H}]",
                            "INPUT.SELF_TRAIN_BASE_SIZE", f"[{W}, {H}]", "INPUT.SELF_TRAIN_CROP", f"[{W}, {H}]",
                            "INPUT.SELF_TRAIN_SCALE", "[1.0, 1.0]", "INPUT.SELF_TRAIN_FLIP_PROB", "0.0", "DATALOADER.NUM_WORKERS", "0", *opts])


def test_catalog_names():
    assert {"cityscapes_test", "folder_train", "folder_val", "cityscapes_pseudo"} <= set(CATALOG)


def test_folder_train_is_unlabelled_images(tmp_path):
    make_tree(tmp_path)
    ds = build_dataset(cfg_for(tmp_path), "folder_train", train=True)
    rel = sorted(os.path.relpath(p, tmp_path / "train") for p, _ in ds.items)
    assert rel == sorted(["a/x.png", "b/x.jpg", "b/c/grey.png", "rgba.PNG"])  # notes.txt is not an image
    assert ds.labels == "none" and all(label is None for _, label in ds.items)
    names = sorted(ds[i]["name"] for i in range(len(ds)))
    assert names == sorted(["a__x.png", "b__x.png", "b__c__grey.png", "rgba.png"])
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, H, W)  # greyscale and RGBA read as RGB, resized to TARGET_SIZE
        assert (item["label"] == 255).all()
        # the all-ignore label of a training item is at the input size (its batch stacks), not the image's own
        # size: only an unlabelled *test* set keeps placeholders at the image size (build.py `build_dataset`)
        assert item["label"].shape == (H, W)


def test_folder_names_that_collide_are_an_error(tmp_path):
    _save_rgb(str(tmp_path / "train" / "x.png"))
    _save_rgb(str(tmp_path / "train" / "x.jpg"))
    with pytest.raises(ValueError, match="share the item name x.png"):
        build_dataset(cfg_for(tmp_path), "folder_train", train=True)
    assert flat_name("a/b/x.jpg") == "a__b__x.png"


def test_folder_val_maps_raw_ids(tmp_path):
    raw = make_tree(tmp_path)
    cfg = cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"), "DATASETS.FOLDER.LABEL_SUFFIX",
                  "_ids.png", "DATASETS.FOLDER.ID_MAP", "[[3, 0], [9, 13]]")
    ds = build_dataset(cfg, "folder_val", train=False)
    assert ds.labels == "required" and len(ds) == 2
    expected = np.full(raw.shape, 255, dtype=np.int64)
    expected[raw == 3], expected[raw == 9] = 0, 13  # 200 is not in the table: ignored
    for i in range(2):
        np.testing.assert_array_equal(ds[i]["label"].numpy(), expected)
    assert sorted(ds[i]["name"] for i in range(2)) == ["sub__v2.png", "v1.png"]
    # the same table from a JSON file
    table = tmp_path / "map.json"
    table.write_text(json.dumps({"3": 0, "9": 13}))
    ds_json = build_dataset(cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"),
                                    "DATASETS.FOLDER.LABEL_SUFFIX", "_ids.png", "DATASETS.FOLDER.ID_MAP_FILE",
                                    str(table)), "folder_val", train=False)
    np.testing.assert_array_equal(ds_json[0]["label"].numpy(), expected)
    # without a table the files must hold train ids already: 200 is out of range
    ds_raw = build_dataset(cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"),
                                   "DATASETS.FOLDER.LABEL_SUFFIX", "_ids.png"), "folder_val", train=False)
    with pytest.raises(ValueError, match="outside"):
        ds_raw[0]


def test_id_map_lut():
    lut = id_map_lut([[7, 0], [26, 13]])
    assert lut[7] == 0 and lut[26] == 13 and lut[8] == 255
    assert id_map_lut([]) is None
    with pytest.raises(ValueError, match="pair"):
        id_map_lut([[1, 2, 3]])


@pytest.mark.parametrize("content, says", [
    ("[7, 0]", "entry 7 is not a [raw id, train id] pair of ints"),
    ('{"7": 0, "8": 19}', "entry [8, 19] has train id 19; expected one in [0, 19)"),
    ("[[7, 0], [7, 2]]", "raw id 7 is mapped to 0 and to 2"),
    ('{"road": 0}', "its keys must be raw ids (integers), got ['road']"),
    ('{"7": "0"}', "entry [7, '0'] is not a [raw id, train id] pair of ints"),
    ('"7: 0"', "expected a list of [raw id, train id] pairs")])
def test_an_id_map_file_gets_the_checks_of_the_config_key_naming_the_file(tmp_path, content, says):
    """The same rules as DATASETS.FOLDER.ID_MAP (checked when the config loads), for the file, when read:
    the last of two entries no longer wins in silence, a flat pair no longer crashes."""
    path = tmp_path / "ids.json"
    path.write_text(content)
    with pytest.raises(ValueError) as e:
        id_map_lut(path=str(path), num_classes=19)
    assert str(e.value).startswith(f"id map file {path} (DATASETS.FOLDER.ID_MAP_FILE): ") and says in str(e.value)
    make_tree(tmp_path)  # and so through the dataset, with the config's MODEL.NUM_CLASSES
    cfg = cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"), "DATASETS.FOLDER.ID_MAP_FILE",
                  str(path))
    with pytest.raises(ValueError, match=re.escape(says)):
        build_dataset(cfg, "folder_val", train=False)


def test_a_damaged_id_map_file_is_named(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text('{"7": 0, "26": 13}')
    assert id_map_lut(path=str(path))[26] == 13
    path.write_text('{"7": 0, "26": 1')
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} is not valid JSON \\(Expecting"):
        id_map_lut(path=str(path))


def test_folder_val_without_labels_predicts_at_image_size(tmp_path):
    make_tree(tmp_path)
    _save_rgb(str(tmp_path / "val" / "big.png"), size=(50, 30))
    ds = build_dataset(cfg_for(tmp_path), "folder_val", train=False)
    assert ds.labels == "none"
    sizes = {ds[i]["name"]: tuple(ds[i]["label"].shape) for i in range(len(ds))}
    assert sizes["big.png"] == (30, 50) and sizes["v1.png"] == (H, W)
    assert ds[0]["image"].shape == (3, H, W)


def test_pseudo_dataset_on_a_folder_target(tmp_path):
    make_tree(tmp_path)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    rng = np.random.default_rng(5)
    written = {}
    for name in ["a__x.png", "b__x.png", "b__c__grey.png", "rgba.png"]:
        lab = rng.integers(0, 19, (H, W), dtype=np.uint8)
        lab[0, 0] = 255
        Image.fromarray(lab).save(str(pseudo / name))
        written[name] = lab
    cfg = cfg_for(tmp_path, "DATASETS.PSEUDO_DIR", str(pseudo))
    ds = build_dataset(cfg, "cityscapes_pseudo", train=True)  # the stages' name: the target's images
    assert len(ds) == 4 and ds.labels == "required"
    for i in range(len(ds)):
        item = ds[i]
        if item["name"] == "b__x.png":  # 40×20 image: the label is resized (nearest) to it, then to the crop
            assert item["label"].shape == (H, W)
            continue
        np.testing.assert_array_equal(item["label"].numpy(), written[item["name"]].astype(np.int64))
    assert sorted(ds[i]["name"] for i in range(len(ds))) == sorted(written)
    os.remove(str(pseudo / "rgba.png"))
    with pytest.raises(FileNotFoundError, match="rgba.png"):
        ds[[i for i in range(len(ds)) if ds.items[i][0].endswith("rgba.PNG")][0]]


def test_cityscapes_test_split_has_no_labels(tmp_path):
    root = tmp_path / "data"
    for city, frame, size in [("berlin", "000000_000019", (W, H)), ("bonn", "000001_000020", (64, 32))]:
        _save_rgb(str(root / "cityscapes" / "leftImg8bit" / "test" / city / f"{city}_{frame}_leftImg8bit.png"),
                  size=size)
    cfg = load_config("", ["DATASETS.DATA_DIR", str(root), "DATASETS.TEST", "cityscapes_test", "INPUT.TEST_SIZE",
                           f"[{W}, {H}]"])
    ds = build_dataset(cfg, "cityscapes_test", train=False)
    assert ds.labels == "none" and len(ds) == 2
    items = [ds[i] for i in range(2)]
    assert [it["name"] for it in items] == ["berlin_000000_000019_leftImg8bit.png", "bonn_000001_000020_leftImg8bit.png"]
    assert [tuple(it["label"].shape) for it in items] == [(H, W), (32, 64)]  # each image's own size
    assert all(it["image"].shape == (3, H, W) for it in items)
    assert all(bool((it["label"] == 255).all()) for it in items)
    assert items[0]["label"].dtype == torch.int64


def test_a_16_bit_label_past_255_without_an_id_map_is_named_not_ignored(tmp_path):
    from conftest import write_png16

    _save_rgb(str(tmp_path / "val" / "v.png"))
    raw = np.zeros((H, W), dtype=np.uint16)
    raw[0, :3] = 300, 1, 255
    os.makedirs(tmp_path / "labels")
    write_png16(str(tmp_path / "labels" / "v.png"), raw)
    opts = ["DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels")]
    with pytest.raises(ValueError, match=re.escape(f"label file {tmp_path / 'labels' / 'v.png'} holds values [300] "
                                                   "above 255") + ".*DATASETS.FOLDER.ID_MAP"):
        build_dataset(cfg_for(tmp_path, *opts), "folder_val", train=False)[0]
    mapped = build_dataset(cfg_for(tmp_path, *opts, "DATASETS.FOLDER.ID_MAP", "[[300, 5], [1, 1], [0, 0]]"),
                           "folder_val", train=False)[0]["label"]
    assert mapped[0, :3].tolist() == [5, 1, 255] and int(mapped[1:].max()) == 0


def test_a_turned_photo_and_a_label_drawn_on_what_a_viewer_shows_are_a_pair(tmp_path):
    """A phone photo stored W×H with EXIF orientation 6 shows as H×W: its label, drawn on what is shown,
    passes the data check, and an unlabelled one is predicted at the shown size."""
    from spcl.data.check import check_dataset, dataset_for_check

    arr = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    os.makedirs(tmp_path / "val")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(str(tmp_path / "val" / "p.png"), exif=exif)
    shown = np.rot90(arr, -1)  # W×H
    os.makedirs(tmp_path / "labels")
    label = (shown[..., 2] > 127).astype(np.uint8)  # a label of what the viewer shows
    Image.fromarray(label).save(str(tmp_path / "labels" / "p.png"))
    cfg = cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"), "INPUT.TEST_SIZE", f"[{H}, {W}]")
    result = check_dataset(dataset_for_check(cfg, "folder_val"), "folder_val")
    assert result.bad == []
    item = build_dataset(cfg, "folder_val", train=False)[0]
    np.testing.assert_array_equal(item["label"].numpy(), label)
    Image.fromarray(label.T.copy()).save(str(tmp_path / "labels" / "p.png"))  # drawn on the stored pixels
    assert len(check_dataset(dataset_for_check(cfg, "folder_val"), "folder_val").bad) == 1
    unlabelled = build_dataset(cfg_for(tmp_path), "folder_val", train=False)[0]
    assert tuple(unlabelled["label"].shape) == (W, H)


def test_files_that_are_not_images_are_named_once_per_folder(tmp_path, spcl_log):
    """make_tree's train/ holds notes.txt: a warning names it (once, however often the set is built); hidden
    files (.DS_Store) are not worth one."""
    from spcl.data.datasets import folder

    make_tree(tmp_path)
    (tmp_path / "train" / ".DS_Store").write_text("")
    folder._WARNED.discard(os.path.abspath(tmp_path / "train"))
    for _ in range(2):
        build_dataset(cfg_for(tmp_path), "folder_train", train=True)
    said = [line for line in spcl_log.text.splitlines() if "left out" in line]
    assert said == [f"1 file(s) under {tmp_path / 'train'} are not JPEG/PNG images and are left out, e.g. notes.txt"]


def test_a_missing_label_folder_is_named_before_the_run(tmp_path):
    """Not one `missing label file` per image at the data check: the folder itself, and --check lists it."""
    from spcl.engine.pipeline import check_inputs

    make_tree(tmp_path)
    cfg = cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "lables"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"label folder not found: '{tmp_path / 'lables'}'") +
                       r".*\(DATASETS.FOLDER.VAL_LABEL_DIR\)"):
        build_dataset(cfg, "folder_val", train=False)
    with pytest.raises(FileNotFoundError, match="folder_val: label folder not found"):
        check_inputs(cfg)
    for labels in ("none", "optional"):  # test.py --format-only, --bn-stats-from, a folder_val target
        assert len(build_dataset(cfg, "folder_val", train=False, labels=labels)) == 2


def test_required_labels_of_a_folder_without_labels_stop_with_an_error_not_none(tmp_path):
    """An analysis (labels required) on folder_train, or on folder_val without VAL_LABEL_DIR, once measured
    nothing on it without a word: a required label is never None. Read with labels optional (the pseudo-label
    stage) or none, the same sets still give all-ignore labels."""
    from spcl.analysis.features import analysis_dataset
    from spcl.data.datasets import SegmentationDataset

    make_tree(tmp_path)
    cfg = cfg_for(tmp_path)  # no DATASETS.FOLDER.VAL_LABEL_DIR
    for name, folder in (("folder_train", "train"), ("folder_val", "val")):
        ds = analysis_dataset(cfg, "target", name)
        assert ds.labels == "required"
        said = (f"folder dataset {tmp_path / folder} has no label folder (image {ds.items[0][0]}), and labels are "
                "required for this use: use folder_val with its labels in DATASETS.FOLDER.VAL_LABEL_DIR")
        with pytest.raises(ValueError, match=re.escape(said)):
            ds[0]
        with pytest.raises(ValueError, match="labels are required"):
            ds.load_label(None)
        for labels in ("optional", "none"):
            ds = build_dataset(cfg, name, train=False, role="test", labels=labels)
            assert ds.load_label(None) is None and bool((ds[0]["label"] == 255).all())
    base = SegmentationDataset([(str(tmp_path / "val" / "v1.jpg"), None)], transform=None, labels="required")
    with pytest.raises(ValueError, match=re.escape(f"SegmentationDataset: image {tmp_path / 'val' / 'v1.jpg'} has "
                                                   "no label file, and labels are required")):
        base[0]


def test_a_folder_named_like_an_image_stops_the_listing_naming_it(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "train" / "b" / "shots.JPG").mkdir()
    with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path / "train" / "b" / "shots.JPG"))):
        build_dataset(cfg_for(tmp_path), "folder_train", train=True)
    (tmp_path / "train" / "b" / "shots.JPG").rename(tmp_path / "train" / "b" / "shots")  # a plain folder name
    assert len(build_dataset(cfg_for(tmp_path), "folder_train", train=True)) == 4


def test_a_16_bit_label_of_256_without_an_id_map_is_named_not_read_as_road(tmp_path):
    """256 is the first 16-bit value that is no train id (train ids are 0..K-1 and 255, docs/method.md
    "Datasets"): cast to 8 bits it would wrap to 0, road, in silence; it stops the read naming the file and key."""
    from conftest import write_png16

    _save_rgb(str(tmp_path / "val" / "v.png"))
    raw = np.zeros((H, W), dtype=np.uint16)
    raw[0, 0] = 256
    os.makedirs(tmp_path / "labels")
    write_png16(str(tmp_path / "labels" / "v.png"), raw)
    cfg = cfg_for(tmp_path, "DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"))
    with pytest.raises(ValueError, match=r"holds values \[256\] above 255.*DATASETS.FOLDER.ID_MAP"):
        build_dataset(cfg, "folder_val", train=False)[0]


def test_a_list_file_of_absolute_paths_reads_the_same_items_as_relative_ones(tmp_path):
    """DATASETS.TEST_LIST for folder_val may name images by absolute path (folder.py `FolderDataset`: "relative to
    `image_dir`, or absolute"): the items, their names (`sub__v2.png`) and their labels (the same sub-folders below
    VAL_LABEL_DIR) are those of the relative list."""
    raw = make_tree(tmp_path)
    opts = ["DATASETS.FOLDER.VAL_LABEL_DIR", str(tmp_path / "labels"), "DATASETS.FOLDER.LABEL_SUFFIX", "_ids.png",
            "DATASETS.FOLDER.ID_MAP", "[[3, 0], [9, 13]]"]
    rel_list, abs_list = tmp_path / "rel.txt", tmp_path / "abs.txt"
    rel_list.write_text("sub/v2.jpg\nv1.jpg\n")
    abs_list.write_text(f"{tmp_path / 'val' / 'sub' / 'v2.jpg'}\n{tmp_path / 'val' / 'v1.jpg'}\n")
    expected = np.full(raw.shape, 255, dtype=np.int64)
    expected[raw == 3], expected[raw == 9] = 0, 13
    for lst in (rel_list, abs_list):
        ds = build_dataset(cfg_for(tmp_path, *opts, "DATASETS.TEST_LIST", str(lst)), "folder_val", train=False)
        assert [ds[i]["name"] for i in range(len(ds))] == ["sub__v2.png", "v1.png"]
        assert [label for _, label in ds.items] == [str(tmp_path / "labels" / "sub" / "v2_ids.png"),
                                                     str(tmp_path / "labels" / "v1_ids.png")]
        for i in range(2):
            np.testing.assert_array_equal(ds[i]["label"].numpy(), expected)


def test_folder_train_takes_only_files_ending_in_the_image_suffix(tmp_path):
    """DATASETS.FOLDER.IMAGE_SUFFIX holds for folder_train as for folder_val (spcl/config/defaults.py: "Only files
    ending in IMAGE_SUFFIX are images"): masks or depth maps stored beside the photos are not trained on."""
    _save_rgb(str(tmp_path / "train" / "a" / "x_rgb.png"))
    _save_rgb(str(tmp_path / "train" / "a" / "x_mask.png"), seed=1)
    _save_rgb(str(tmp_path / "train" / "y_rgb.png"), seed=2)
    ds = build_dataset(cfg_for(tmp_path, "DATASETS.FOLDER.IMAGE_SUFFIX", "_rgb.png"), "folder_train", train=True)
    assert sorted(os.path.relpath(p, tmp_path / "train") for p, _ in ds.items) == ["a/x_rgb.png", "y_rgb.png"]


def test_find_images_sorts_whole_relative_paths(tmp_path):
    """`find_images` (spcl/data/datasets/folder.py: "every image below it ... sorted") orders folder_train /
    folder_val by the whole relative path, not by the folder walk, which puts a folder's own files before its
    sub-folders' and `a/` before `a-b/`; the item order fixes the sample stream of a seed."""
    rels = ["b.png", "a/x.jpg", "a-b/y.png", "a/c/z.png", "a/w.png"]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert find_images(str(tmp_path)) == ["a-b/y.png", "a/c/z.png", "a/w.png", "a/x.jpg", "b.png"]
