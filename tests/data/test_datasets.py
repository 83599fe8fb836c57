"""Datasets of the catalog (docs/method.md "Datasets") on tiny files written in the exact layouts: item contents,
trainId decoding, listing order, list files, test-mode sizes, the pseudo-labelled set and loaders."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from spcl.config import load_config
from spcl.data import CATALOG, build_dataset, build_test_loader
from conftest import write_png16
from spcl.data.io import write_label_png
from spcl.data.datasets import list_images
from spcl.data.labels import labelid_to_trainid_lut, synthia_to_trainid_lut

W, H = 12, 6  # file size of every tiny image
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _image(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _label_ids(seed, choices):
    return np.random.default_rng(seed + 1000).choice(choices, size=(H, W)).astype(np.uint8)


CS_IDS = [0, 1, 7, 8, 11, 12, 17, 21, 22, 23, 24, 26, 27, 31, 33]
SYN_IDS = [0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 15, 17, 19, 21, 22]


def make_gta5(root, stems):
    out = {}
    for i, stem in enumerate(stems):
        img = _image(os.path.join(root, "gta5", "images", stem + ".png"), i)
        ids = _label_ids(i, CS_IDS)
        lab = Image.fromarray(ids, mode="P")
        lab.putpalette(list(np.random.default_rng(i).integers(0, 256, 768)))  # arbitrary colours
        os.makedirs(os.path.join(root, "gta5", "labels"), exist_ok=True)
        lab.save(os.path.join(root, "gta5", "labels", stem + ".png"))
        out[stem + ".png"] = (img, ids)
    return out


def make_synthia(root, stems):
    out = {}
    base = os.path.join(root, "synthia", "RAND_CITYSCAPES")
    os.makedirs(os.path.join(base, "GT", "LABELS"), exist_ok=True)
    for i, stem in enumerate(stems):
        img = _image(os.path.join(base, "RGB", stem + ".png"), 10 + i)
        ids = _label_ids(10 + i, SYN_IDS).astype(np.uint16)
        inst = np.random.default_rng(i).integers(256, 65535, (H, W)).astype(np.uint16)
        write_png16(os.path.join(base, "GT", "LABELS", stem + ".png"), np.stack([ids, inst, inst // 2], -1))
        out[stem + ".png"] = (img, ids)
    return out


def make_synscapes(root, stems):
    out = {}
    for i, stem in enumerate(stems):
        img = _image(os.path.join(root, "synscapes", "img", "rgb-2k", stem + ".png"), 20 + i)
        ids = _label_ids(20 + i, CS_IDS)
        write_label_png(os.path.join(root, "synscapes", "img", "class", stem + ".png"), ids)
        out[stem + ".png"] = (img, ids)
    return out


def make_cityscapes(root, split, names):
    out = {}
    for i, n in enumerate(names):
        img = _image(os.path.join(root, "cityscapes", "leftImg8bit", split, n), 30 + i)
        ids = _label_ids(30 + i, CS_IDS)
        write_label_png(os.path.join(root, "cityscapes", "gtFine", split,
                                     n.replace("_leftImg8bit.png", "_gtFine_labelIds.png")), ids)
        out[n] = (img, ids)
    return out


def cfg_for(root, *opts):
    return load_config("", [
        "DATASETS.DATA_DIR", str(root), "DATALOADER.NUM_WORKERS", "0",
        "INPUT.SOURCE_SIZE", f"[{W}, {H}]", "INPUT.TARGET_SIZE", f"[{W}, {H}]", "INPUT.TEST_SIZE", f"[{W}, {H}]",
        "INPUT.SOURCE_JITTER", "False", *opts])


def _expected_image(arr):
    return torch.from_numpy(((arr / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()


def _check_item(item, index, name, img, train_ids):
    assert set(item) == {"image", "label", "name", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, H, W)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
    assert item["name"] == name and item["index"] == index
    torch.testing.assert_close(item["image"], _expected_image(img), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(item["label"].numpy(), train_ids.astype(np.int64))


def test_gta5_train(tmp_path):
    files = make_gta5(tmp_path, ["00003", "00001", "00010", "00002"])  # written out of order
    ds = build_dataset(cfg_for(tmp_path), "gta5_train", train=True)
    names = sorted(files)
    assert [os.path.basename(p) for p, _ in ds.items] == names
    lut = labelid_to_trainid_lut(19)
    for i, n in enumerate(names):
        img, ids = files[n]
        _check_item(ds[i], i, n, img, lut[ids])
    assert set(np.unique(ds[0]["label"].numpy())) <= set(range(19)) | {255}


def test_synthia_train_16_classes(tmp_path):
    files = make_synthia(tmp_path, ["0000002", "0000001"])
    ds = build_dataset(cfg_for(tmp_path, "MODEL.NUM_CLASSES", "16", "DATASETS.SOURCE", "synthia_train"),
                       "synthia_train", train=True)
    lut = synthia_to_trainid_lut(16)
    for i, n in enumerate(sorted(files)):
        img, ids = files[n]
        item = ds[i]
        _check_item(item, i, n, img, lut[ids])
        lab = item["label"].numpy()
        assert lab.max() == 255 and set(np.unique(lab)) <= set(range(16)) | {255}
        assert (lab[ids == 3] == 0).all() and (lab[ids == 1] == 9).all()  # road, sky


def test_synscapes_numeric_order(tmp_path):
    files = make_synscapes(tmp_path, ["10", "2", "1"])
    ds = build_dataset(cfg_for(tmp_path, "DATASETS.SOURCE", "synscapes_train"), "synscapes_train", train=True)
    assert [os.path.basename(p) for p, _ in ds.items] == ["1.png", "2.png", "10.png"]
    lut = labelid_to_trainid_lut(19)
    for i, n in enumerate(["1.png", "2.png", "10.png"]):
        img, ids = files[n]
        _check_item(ds[i], i, n, img, lut[ids])


CITY_NAMES = ["bremen/bremen_000001_000019_leftImg8bit.png", "aachen/aachen_000002_000019_leftImg8bit.png",
              "aachen/aachen_000000_000019_leftImg8bit.png"]


@pytest.mark.parametrize("num_classes", [19, 16])
def test_cityscapes_val(tmp_path, num_classes):
    files = make_cityscapes(tmp_path, "val", CITY_NAMES)
    ds = build_dataset(cfg_for(tmp_path, "MODEL.NUM_CLASSES", str(num_classes)), "cityscapes_val", train=False)
    lut = labelid_to_trainid_lut(num_classes)
    for i, n in enumerate(sorted(CITY_NAMES)):
        img, ids = files[n]
        _check_item(ds[i], i, os.path.basename(n), img, lut[ids])


def test_cityscapes_train_unlabelled_target_and_labelled_test_mode(tmp_path):
    files = make_cityscapes(tmp_path, "train", CITY_NAMES)
    cfg = cfg_for(tmp_path)
    ds = build_dataset(cfg, "cityscapes_train", train=True)  # the target: labels not read
    item = ds[0]
    assert item["label"].shape == (H, W) and (item["label"] == 255).all()
    assert item["name"] == "aachen_000000_000019_leftImg8bit.png"
    # the same split as an evaluation set keeps its labels
    ds = build_dataset(cfg, "cityscapes_train", train=False)
    n = sorted(CITY_NAMES)[0]
    np.testing.assert_array_equal(ds[0]["label"].numpy(), labelid_to_trainid_lut(19)[files[n][1]])


def test_list_file_order_and_subset(tmp_path):
    make_cityscapes(tmp_path, "val", CITY_NAMES)
    lst = tmp_path / "val.txt"
    lst.write_text("# comment\n" + CITY_NAMES[1] + "\n\n" + CITY_NAMES[0] + "\n")
    ds = build_dataset(cfg_for(tmp_path, "DATASETS.TEST_LIST", str(lst)), "cityscapes_val", train=False)
    assert [ds[i]["name"] for i in range(len(ds))] == [os.path.basename(CITY_NAMES[1]),
                                                        os.path.basename(CITY_NAMES[0])]
    gta = make_gta5(tmp_path, ["00001", "00002", "00003"])
    glst = tmp_path / "gta.txt"
    glst.write_text("00003.png\n00001.png\n")
    ds = build_dataset(cfg_for(tmp_path, "DATASETS.SOURCE_LIST", str(glst)), "gta5_train", train=True)
    assert [ds[i]["name"] for i in range(2)] == ["00003.png", "00001.png"]
    np.testing.assert_array_equal(ds[0]["label"].numpy(), labelid_to_trainid_lut(19)[gta["00003.png"][1]])
    with pytest.raises(FileNotFoundError, match="nolist.txt"):
        build_dataset(cfg_for(tmp_path, "DATASETS.SOURCE_LIST", str(tmp_path / "nolist.txt")), "gta5_train", train=True)
    # as a Windows editor saves it: a byte-order mark before the first name, CRLF line ends
    glst.write_bytes("\ufeff00003.png\r\n00001.png\r\n".encode("utf-8"))
    ds = build_dataset(cfg_for(tmp_path, "DATASETS.SOURCE_LIST", str(glst)), "gta5_train", train=True)
    assert [ds[i]["name"] for i in range(2)] == ["00003.png", "00001.png"]


@pytest.mark.parametrize("key,name,train", [("SOURCE_LIST", "gta5_train", True), ("TARGET_LIST", "cityscapes_train", True),
                                            ("TEST_LIST", "cityscapes_val", False),
                                            ("TARGET_LIST", "cityscapes_pseudo", True)])
def test_a_list_file_that_selects_nothing_is_named_by_its_key(tmp_path, key, name, train):
    """Only blank lines and comments: refused with the key and the file, before a loader is built; one entry
    more and the same file selects that image (the refusal is about the list being empty, nothing else)."""
    make_cityscapes(tmp_path, "train", CITY_NAMES[:1])
    make_cityscapes(tmp_path, "val", CITY_NAMES[:1])
    make_gta5(tmp_path, ["00001"])
    (tmp_path / "pseudo").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("# nothing yet\n\n   \n")
    cfg = cfg_for(tmp_path, f"DATASETS.{key}", str(lst), "DATASETS.PSEUDO_DIR", str(tmp_path / "pseudo"))
    with pytest.raises(ValueError) as e:
        build_dataset(cfg, name, train=train)
    assert str(e.value) == (f"DATASETS.{key} {lst} lists no files (every line is blank or a # comment): give one "
                            f"image a line, or set DATASETS.{key} \"\" to read every image of the set")
    lst.write_text(lst.read_text() + ("00001.png" if name == "gta5_train" else CITY_NAMES[0]) + "\n")
    assert len(build_dataset(cfg, name, train=train).items) == 1


def test_test_mode_resizes_image_but_not_label(tmp_path):
    files = make_cityscapes(tmp_path, "val", CITY_NAMES[:1])
    cfg = cfg_for(tmp_path, "INPUT.TEST_SIZE", "[6, 4]")
    item = build_dataset(cfg, "cityscapes_val", train=False)[0]
    assert item["image"].shape == (3, 4, 6)
    assert item["label"].shape == (H, W)
    np.testing.assert_array_equal(item["label"].numpy(), labelid_to_trainid_lut(19)[files[CITY_NAMES[0]][1]])
    expected = np.asarray(Image.fromarray(files[CITY_NAMES[0]][0]).resize((6, 4), Image.BILINEAR))
    torch.testing.assert_close(item["image"], _expected_image(expected), atol=1e-5, rtol=0)


def test_train_mode_resizes_label_nearest(tmp_path):
    files = make_gta5(tmp_path, ["00001"])
    cfg = cfg_for(tmp_path, "INPUT.SOURCE_SIZE", "[24, 12]")
    item = build_dataset(cfg, "gta5_train", train=True)[0]
    assert item["image"].shape == (3, 12, 24) and item["label"].shape == (12, 24)
    train_ids = labelid_to_trainid_lut(19)[files["00001.png"][1]]
    # exact 2x upscaling with nearest: every label pixel repeats as a 2x2 block
    np.testing.assert_array_equal(item["label"].numpy(), np.repeat(np.repeat(train_ids, 2, 0), 2, 1))


def test_cityscapes_pseudo(tmp_path):
    images = {os.path.basename(n): img for n, (img, _) in make_cityscapes(tmp_path, "train", CITY_NAMES).items()}
    pseudo = tmp_path / "pseudo"
    labels = {}
    for i, n in enumerate(CITY_NAMES):
        lab = np.random.default_rng(i).choice([0, 5, 18, 255], size=(H // 2, W // 2)).astype(np.uint8)
        write_label_png(str(pseudo / os.path.basename(n)), lab)  # written at half size
        labels[os.path.basename(n)] = lab
    upsampled = {name: np.repeat(np.repeat(lab, 2, 0), 2, 1) for name, lab in labels.items()}

    def pseudo_set(jitter: str):
        return build_dataset(cfg_for(tmp_path, "DATASETS.PSEUDO_DIR", str(pseudo),
                                     "INPUT.SELF_TRAIN_BASE_SIZE", f"[{W}, {H}]",
                                     "INPUT.SELF_TRAIN_SCALE", "[1.0, 1.0]",
                                     "INPUT.SELF_TRAIN_CROP", f"[{W}, {H}]", "INPUT.SELF_TRAIN_FLIP_PROB", "0.0",
                                     "INPUT.SELF_TRAIN_JITTER", jitter, "INPUT.COLOR_JITTER", "[0.5, 0.5, 0.5, 0.0]"),
                             "cityscapes_pseudo", train=True)

    ds = pseudo_set("False")
    assert len(ds) == 3
    for i in range(3):
        item = ds[i]
        assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
        np.testing.assert_array_equal(item["label"].numpy(), upsampled[item["name"]])
        # SELF_TRAIN_JITTER False (the toy configs): the image reaches the model with its own colours
        torch.testing.assert_close(item["image"], _expected_image(images[item["name"]]), atol=1e-5, rtol=0)
    jittered = pseudo_set("True")
    for i in range(3):  # True (the paper configs): colours change, labels do not
        item = jittered[i]
        assert not torch.allclose(item["image"], _expected_image(images[item["name"]]), atol=1e-3)
        np.testing.assert_array_equal(item["label"].numpy(), upsampled[item["name"]])
    with pytest.raises(FileNotFoundError, match="PSEUDO_DIR"):
        build_dataset(cfg_for(tmp_path, "DATASETS.PSEUDO_DIR", str(tmp_path / "none")), "cityscapes_pseudo",
                      train=True)


def test_unknown_dataset_name_raises(tmp_path):
    with pytest.raises(KeyError, match="mapillary_train"):
        build_dataset(cfg_for(tmp_path), "mapillary_train", train=True)
    assert set(CATALOG) == {"gta5_train", "synthia_train", "synscapes_train", "cityscapes_train",
                            "cityscapes_val", "cityscapes_test", "folder_train", "folder_val", "cityscapes_pseudo"}


def _not_found_sites():
    """Every library function that reports a missing path, called with that path."""
    from spcl.config import load_config
    from spcl.data.datasets.base import list_images, read_list_file
    from spcl.data.datasets.cityscapes import CityscapesPseudoDataset
    from spcl.data.datasets.folder import PseudoLabelDataset, find_images, id_map_lut
    from spcl.data.samplers import load_class_index
    from spcl.modeling.weights import read_checkpoint
    from spcl.prototypes.extract import load_prototype_file
    return {
        "dataset folder": lambda p: list_images(p, ".png"),
        "list file": read_list_file,
        "image folder": find_images,
        "id map": lambda p: id_map_lut(path=p),
        "pseudo labels (cityscapes)": lambda p: CityscapesPseudoDataset(".", p, None),
        "pseudo labels (folder)": lambda p: PseudoLabelDataset(None, p, None),
        "class index": lambda p: load_class_index(p, []),
        "weights": read_checkpoint,
        "prototypes": load_prototype_file,
        "config": load_config,
    }


@pytest.mark.parametrize("site", sorted(_not_found_sites()))
def test_a_missing_relative_path_names_the_directory_it_was_read_from(tmp_path, monkeypatch, site):
    """Config and command-line paths are read from the current directory, so a tool run outside the
    repository root says where it looked; an absolute path needs no directory."""
    call = _not_found_sites()[site]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        call("nowhere/x")
    hint = r"nowhere/x'?, read relative to the current directory " + re.escape(str(tmp_path))
    assert re.search(hint, str(err.value)), str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        call(str(tmp_path / "nowhere"))
    assert "current directory" not in str(err.value)


def test_test_loader_batches_in_order(tmp_path):
    make_cityscapes(tmp_path, "val", CITY_NAMES)
    cfg = cfg_for(tmp_path, "TEST.BATCH_SIZE", "2")
    loader = build_test_loader(cfg, build_dataset(cfg, "cityscapes_val", train=False))
    batches = list(loader)
    assert [len(b["name"]) for b in batches] == [2, 1]
    assert [n for b in batches for n in b["name"]] == [os.path.basename(n) for n in sorted(CITY_NAMES)]
    assert batches[0]["image"].shape == (2, 3, H, W) and batches[0]["label"].shape == (2, H, W)


def test_sample_seed_fixes_augmentation(tmp_path):
    make_gta5(tmp_path, ["00001"])
    cfg = cfg_for(tmp_path, "INPUT.SOURCE_JITTER", "True", "INPUT.FLIP_PROB", "0.5")
    ds = build_dataset(cfg, "gta5_train", train=True)
    a, b = ds[(0, 123)], ds[(0, 123)]
    torch.testing.assert_close(a["image"], b["image"], atol=0, rtol=0)
    assert a["index"] == 0
    others = [ds[(0, s)]["image"] for s in range(5)]
    assert any(not torch.equal(others[0], o) for o in others[1:])


def test_toy_root_is_readable(toy_root):
    cfg = load_config("", ["DATASETS.DATA_DIR", toy_root, "INPUT.TEST_SIZE", "[64, 32]"])
    ds = build_dataset(cfg, "cityscapes_val", train=False)
    assert len(ds) == 4
    item = ds[0]
    assert item["image"].shape == (3, 32, 64) and item["label"].shape[-2:] == (32, 64)
    assert set(np.unique(item["label"].numpy())) <= set(range(19)) | {255}
    src = build_dataset(cfg, "gta5_train", train=False)
    assert len(src) == 8


def test_gta5_label_of_another_size_names_the_file(tmp_path):
    # Some real GTA5 frames have a label of another size: the loader stops naming the file (issue #2)
    # rather than silently resizing one of them.
    make_gta5(tmp_path, ["00001"])
    ids = np.random.default_rng(5).choice([7, 26, 0], size=(H - 2, W - 1)).astype(np.uint8)
    lab = Image.fromarray(ids, mode="P")
    lab.putpalette([0] * 768)
    lab.save(tmp_path / "gta5" / "labels" / "00001.png")
    with pytest.raises(ValueError, match="00001.png"):
        build_dataset(cfg_for(tmp_path), "gta5_train", train=False)[0]


@pytest.mark.parametrize("name, top", [("gta5_train", 33), ("synscapes_train", 33), ("cityscapes_val", 33),
                                       ("synthia_train", 22)])
def test_a_raw_id_outside_the_format_stops_the_read_naming_the_file(tmp_path, name, top):
    # The id → trainId table maps an id it does not know to 255, so a damaged label file would be read
    # as ignored pixels: test.py scored such a file instead of stopping as training does. Every reader
    # refuses ids above its format's largest (labelIds 33, SYNTHIA 22) and reads the largest itself.
    make = {"gta5_train": lambda: make_gta5(tmp_path, ["00001"]),
            "synscapes_train": lambda: make_synscapes(tmp_path, ["1"]),
            "synthia_train": lambda: make_synthia(tmp_path, ["0000001"]),
            "cityscapes_val": lambda: make_cityscapes(tmp_path, "val", ["a/a_000000_000001_leftImg8bit.png"])}
    make[name]()
    ds = build_dataset(cfg_for(tmp_path), name, train=False)
    path = ds.items[0][1]
    raw = np.asarray(Image.open(path)) if name != "synthia_train" else None
    for value, ok in ((top, True), (top + 1, False), (200, False)):
        if name == "synthia_train":
            ids = np.full((H, W), 3, np.uint16)
            ids[1, 2] = value
            write_png16(path, np.stack([ids, ids, ids], -1))
        else:
            ids = raw.copy()
            ids[1, 2] = value
            lab = Image.fromarray(ids, mode="P")
            lab.putpalette([0] * 768)
            lab.save(path)
        if ok:  # the largest id is read through the table
            lut = synthia_to_trainid_lut(ds.num_classes) if name == "synthia_train" else labelid_to_trainid_lut(19)
            assert ds[0]["label"][1, 2].item() == lut[top]
        else:
            message = rf"label file {re.escape(path)} holds ids \[{value}\] outside 0\.\.{top}"
            with pytest.raises(ValueError, match=message):
                ds[0]


@pytest.mark.parametrize("make,name,replaced", [
    (make_cityscapes, "cityscapes_val", "aachen/aachen_000002_000019_leftImg8bit.png"),
    (make_gta5, "gta5_train", "00002.png")])
def test_an_image_replaced_by_a_folder_of_its_name_stops_the_listing_naming_it(tmp_path, make, name, replaced):
    """Found by a walk (no list file), a folder named like an image was skipped: one item fewer without a word."""
    if make is make_cityscapes:
        make(tmp_path, "val", CITY_NAMES)
        path = os.path.join(tmp_path, "cityscapes", "leftImg8bit", "val", replaced)
    else:
        make(tmp_path, ["00001", "00002", "00003"])
        path = os.path.join(tmp_path, "gta5", "images", replaced)
    cfg = cfg_for(tmp_path)
    assert len(build_dataset(cfg, name, train=False)) == 3
    os.remove(path)
    os.makedirs(os.path.join(path, "inside"))  # a folder, with a sub-folder of its own
    with pytest.raises(IsADirectoryError) as e:
        build_dataset(cfg, name, train=False)
    assert f"e.g. {path}:" in str(e.value) and "1 item(s) short" in str(e.value)
    os.rename(path, path[:-4] + "_moved")  # out of the way, as the message says: 2 items, no error
    assert len(build_dataset(cfg, name, train=False)) == 2


def test_synscapes_list_file_keeps_its_order(tmp_path):
    """With DATASETS.SOURCE_LIST Synscapes reads the listed files in the list's order (datasets/README.md: "With
    `DATASETS.SOURCE_LIST` ... it uses the files of the list, in order"); the numeric sort of synscapes.py is for
    the folder listing alone, as for every other set (cf. test_list_file_order_and_subset)."""
    files = make_synscapes(tmp_path, ["1", "2", "10"])
    lst = tmp_path / "syn.txt"
    lst.write_text("10.png\n1.png\n")
    cfg = cfg_for(tmp_path, "DATASETS.SOURCE", "synscapes_train", "DATASETS.SOURCE_LIST", str(lst))
    ds = build_dataset(cfg, "synscapes_train", train=True)
    assert [ds[i]["name"] for i in range(len(ds))] == ["10.png", "1.png"]
    np.testing.assert_array_equal(ds[0]["label"].numpy(), labelid_to_trainid_lut(19)[files["10.png"][1]])


def test_synthia_train_19_classes(tmp_path):
    """SYNTHIA read with MODEL.NUM_CLASSES 19 gets 19-class train ids, terrain / truck / train (9, 14, 16) left
    empty (docs/method.md "Datasets": the 16 SYNTHIA ids in 16-class order, placed at their class's 19-class id).
    The table is written out by hand here: 3 road 0, 4 sidewalk 1, 2 building 2, 21 wall 3, 5 fence 4, 7 pole 5,
    15 light 6, 9 sign 7, 6 vegetation 8, 1 sky 10, 10 person 11, 17 rider 12, 8 car 13, 19 bus 15,
    12 motorcycle 17, 11 bicycle 18; every other id 255."""
    files = make_synthia(tmp_path, ["0000001"])
    cfg = cfg_for(tmp_path, "MODEL.NUM_CLASSES", "19", "DATASETS.SOURCE", "synthia_train")
    ds = build_dataset(cfg, "synthia_train", train=True)
    ids = files["0000001.png"][1]
    hand = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17,
            11: 18}
    expected = np.full((H, W), 255, dtype=np.int64)
    for sid, train_id in hand.items():
        expected[ids == sid] = train_id
    assert {1, 8, 11} <= set(np.unique(ids).tolist())  # sky, car, bicycle: ids whose 16- and 19-class ids differ
    np.testing.assert_array_equal(ds[0]["label"].numpy(), expected)


def test_an_item_read_without_a_sample_seed_is_the_same_on_every_read(tmp_path):
    """`ds[i]` without a sample seed (test loaders, the data checks, analyses) draws its augmentation from a
    generator seeded by the item's index (spcl/data/datasets/base.py `SegmentationDataset.__getitem__`), so every
    read of one item is the same; an unseeded generator would make two reads of one item differ."""
    make_gta5(tmp_path, ["00001"])
    cfg = cfg_for(tmp_path, "INPUT.SOURCE_JITTER", "True", "INPUT.FLIP_PROB", "0.5")
    ds = build_dataset(cfg, "gta5_train", train=True)
    reads = [ds[0] for _ in range(4)]
    for item in reads[1:]:
        torch.testing.assert_close(item["image"], reads[0]["image"], atol=0, rtol=0)
        assert torch.equal(item["label"], reads[0]["label"])


def test_list_images_sorts_whole_relative_paths(tmp_path):
    """`list_images` (spcl/data/datasets/base.py) gives the relative paths sorted as strings, as datasets/README.md
    says ("every image it finds, sorted"), not in the order of the folder walk, which puts a folder's own files
    before those of its sub-folders and `a/` before `a-b/`."""
    rels = ["b.png", "a/x.png", "a-b/y.png", "a/c/z.png", "a/w.png"]
    for rel in rels:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_images(str(tmp_path), ".png") == ["a-b/y.png", "a/c/z.png", "a/w.png", "a/x.png", "b.png"]


def test_cityscapes_pseudo_reads_the_target_list(tmp_path):
    """cityscapes_pseudo is the target's images with pseudo labels (spcl/data/build.py catalog): with
    DATASETS.TARGET_LIST it holds the listed target images, in the list's order (datasets/README.md), as
    cityscapes_train does, not every image of the split."""
    make_cityscapes(tmp_path, "train", CITY_NAMES)
    pseudo = tmp_path / "pseudo"
    for n in CITY_NAMES:
        write_label_png(str(pseudo / os.path.basename(n)), np.zeros((H, W), np.uint8))
    lst = tmp_path / "target.txt"
    lst.write_text(CITY_NAMES[1] + "\n" + CITY_NAMES[0] + "\n")
    cfg = cfg_for(tmp_path, "DATASETS.PSEUDO_DIR", str(pseudo), "DATASETS.TARGET_LIST", str(lst))
    want = [os.path.basename(CITY_NAMES[1]), os.path.basename(CITY_NAMES[0])]
    for name in ("cityscapes_pseudo", "cityscapes_train"):
        ds = build_dataset(cfg, name, train=True)
        assert [os.path.basename(p) for p, _ in ds.items] == want, name


def test_test_loader_start_leaves_out_the_images_already_done(tmp_path):
    """`build_test_loader(..., start=s)` leaves out the first s images of this process's share (spcl/data/build.py:
    "those an interrupted pass has done"), so a resumed pass (prototypes) sees each image once."""
    make_cityscapes(tmp_path, "val", CITY_NAMES)
    cfg = cfg_for(tmp_path, "TEST.BATCH_SIZE", "1")
    ds = build_dataset(cfg, "cityscapes_val", train=False)
    names = [os.path.basename(n) for n in sorted(CITY_NAMES)]
    for start in (0, 1, 3):
        loader = build_test_loader(cfg, ds, start=start)
        assert [n for b in loader for n in b["name"]] == names[start:]
