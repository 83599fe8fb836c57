"""Label maps (docs/method.md "Datasets") and the label/image readers of spcl.data.io (16-bit SYNTHIA labels, GTA5
palette labels, errors naming the file), plus checks against the real Cityscapes fixture files."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import write_png16
from spcl.config import load_config
from spcl.data import build_dataset
from spcl.data import labels as L
from spcl.data.io import read_image, read_label_indices, read_png16_first_channel, write_label_png

CITYSCAPES_19 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# 16-class setting: the 19 minus terrain (22), truck (27), train (31), renumbered.
CITYSCAPES_16 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10, 25: 11, 26: 12,
                 28: 13, 32: 14, 33: 15}
# SYNTHIA ids → 0..15 in the order given in docs/method.md "Datasets".
SYNTHIA_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13,
              12: 14, 11: 15}


# ------------------------------------------------------------------------------------ labels ---
def _check_lut(lut: np.ndarray, mapping: dict):
    assert lut.shape == (65536,) and lut.dtype == np.uint8
    for i in range(65536):
        assert lut[i] == mapping.get(i, 255), i


def test_cityscapes_lut_19():
    lut = L.labelid_to_trainid_lut(19)
    _check_lut(lut, CITYSCAPES_19)
    assert lut[7] == 0 and lut[33] == 18 and lut[0] == 255 and lut[1] == 255 and lut[34] == 255


def test_cityscapes_lut_16():
    lut = L.labelid_to_trainid_lut(16)
    _check_lut(lut, CITYSCAPES_16)
    assert lut[7] == 0 and lut[33] == 15 and lut[22] == 255 and lut[27] == 255 and lut[31] == 255


def test_synthia_lut_16_and_19():
    _check_lut(L.synthia_to_trainid_lut(16), SYNTHIA_16)
    # 19-class ids of the same classes (terrain 9, truck 14, train 16 stay empty).
    names16 = L.CLASSES_16
    expect19 = {sid: L.CLASSES_19.index(names16[k]) for sid, k in SYNTHIA_16.items()}
    _check_lut(L.synthia_to_trainid_lut(19), expect19)
    assert set(expect19.values()) == set(range(19)) - {9, 14, 16}


def test_class_subsets():
    assert len(L.CLASSES_19) == 19 and len(L.CLASSES_16) == 16 and len(L.CLASSES_13) == 13
    assert L.subset_indices(19, L.TAIL_CLASSES) == [3, 4, 6, 7, 9, 12, 14, 15, 16, 17, 18]
    assert L.subset_indices(16, L.CLASSES_13) == [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    # tail classes that exist in the 16-class setting
    assert L.subset_indices(16, L.TAIL_CLASSES) == [3, 4, 6, 7, 11, 13, 14, 15]
    with pytest.raises(ValueError):
        L.class_names(13)


def test_trainid_to_labelid_inverts_the_lut():
    for k in (19, 16):
        back = L.trainid_to_labelid_lut(k)
        fwd = L.labelid_to_trainid_lut(k)
        for t in range(k):
            assert fwd[back[t]] == t
        assert back[255] == 0


def test_palette_and_colorize():
    pal16 = L.palette(16)
    assert pal16.shape == (16, 3)
    assert tuple(pal16[9]) == (70, 130, 180)  # 16-class id 9 = sky
    label = np.array([[0, 18], [255, 10]], dtype=np.uint8)
    col = L.colorize(label, 19)
    assert tuple(col[0, 0]) == (128, 64, 128) and tuple(col[0, 1]) == (119, 11, 32)
    assert tuple(col[1, 0]) == (0, 0, 0) and tuple(col[1, 1]) == (70, 130, 180)
    pal = L.cityscapes_labelid_palette()  # GTA5-style palette indexed by labelId
    assert len(pal) == 768 and pal[3 * 7: 3 * 8] == [128, 64, 128] and pal[3 * 33: 3 * 34] == [119, 11, 32]
    assert pal[0:3] == [0, 0, 0]


# The official colours of the 19 training classes, as listed in cityscapesScripts helpers/labels.py.
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "light": (250, 170, 30), "sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60),
    "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100),
    "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}


def test_palette_is_the_official_cityscapes_one_class_by_class():
    """Every class of both settings gets its Cityscapes colour (labels.py: "the official palette"), so no two
    classes share a colour in a colour map or overlay."""
    for k in (19, 16):
        pal = L.palette(k)
        assert [tuple(int(v) for v in c) for c in pal] == [CITYSCAPES_COLOURS[n] for n in L.class_names(k)]
        assert len({tuple(c) for c in pal}) == k


def test_overlay_rounds_the_blend_to_the_nearest_value():
    """overlay = (1 − alpha)·image + alpha·colour, rounded (labels.py `overlay`): 0.75·1 + 0.25·0 = 0.75 is 1, not
    the 0 that cutting off the fraction would give; 0.75·1 + 0.25·142 = 36.25 is 36."""
    image = np.ones((1, 1, 3), dtype=np.uint8)
    car = np.array([[L.CLASSES_19.index("car")]], dtype=np.uint8)  # colour (0, 0, 142)
    np.testing.assert_array_equal(L.overlay(image, car, 19, alpha=0.25)[0, 0], [1, 1, 36])


# ------------------------------------------------------------------------------------ png16 ---
def test_png16_first_channel_keeps_all_bits_where_pillow_does_not(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 23, size=(6, 7)).astype(np.uint16)
    arr = np.stack([ids, rng.integers(256, 60000, size=(6, 7)).astype(np.uint16),
                    np.full((6, 7), 300, np.uint16)], axis=-1)
    path = str(tmp_path / "0000001.png")
    write_png16(path, arr)
    got = read_png16_first_channel(path)
    assert got.shape == (6, 7)
    np.testing.assert_array_equal(got, ids.astype(np.int32))
    # Pillow reads a 16-bit RGB PNG as 8-bit RGB (high byte): every small class id becomes 0.
    pil = np.array(Image.open(path))
    assert pil.dtype == np.uint8
    assert not np.array_equal(pil[..., 0].astype(np.int32), got)
    assert (pil[..., 0] == 0).all()


def test_png16_single_channel_and_big_values(tmp_path):
    arr = np.array([[0, 255, 256], [1000, 40000, 65535]], dtype=np.uint16)
    path = str(tmp_path / "g.png")
    write_png16(path, arr)
    np.testing.assert_array_equal(read_png16_first_channel(path), arr.astype(np.int32))


def test_png16_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_png16_first_channel(missing)
    bad = tmp_path / "corrupt16.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(IOError) as e:
        read_png16_first_channel(str(bad))
    assert str(bad) in str(e.value)


# ---------------------------------------------------------------------------- palette labels ---
def test_gta5_palette_png_decodes_to_indices_not_colours(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.choice([0, 7, 8, 11, 22, 26, 33, 34], size=(5, 9)).astype(np.uint8)
    img = Image.fromarray(ids, mode="P")
    scrambled = rng.integers(0, 256, 768).astype(np.uint8)  # colours unrelated to the class palette
    img.putpalette(scrambled.tolist())
    path = str(tmp_path / "00001.png")
    img.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_label_indices(path), ids)
    # converting to colours would not recover the ids
    rgb = np.array(Image.open(path).convert("RGB"))
    assert not np.array_equal(rgb[..., 0], ids)
    lut = L.labelid_to_trainid_lut(19)
    np.testing.assert_array_equal(lut[read_label_indices(path)],
                                  np.vectorize(lambda v: CITYSCAPES_19.get(int(v), 255))(ids))


def test_label_reader_rejects_rgb_labels(tmp_path):
    path = str(tmp_path / "rgb_label.png")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="rgb_label.png"):
        read_label_indices(path)


def test_read_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nothere.png")
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(missing)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_label_indices(missing)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(IOError) as e:
        read_image(str(corrupt))
    assert str(corrupt) in str(e.value)
    truncated = tmp_path / "truncated.png"
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(full)
    truncated.write_bytes(full.read_bytes()[:200])
    with pytest.raises(IOError) as e:
        read_image(str(truncated))
    assert str(truncated) in str(e.value)
    # a label file is named a label file, missing or damaged (it was called an image file)
    with pytest.raises(FileNotFoundError, match=f"^missing label file: {missing}$"):
        read_label_indices(missing)
    with pytest.raises(FileNotFoundError, match=f"^missing image file: {missing}$"):
        read_image(missing)
    Image.fromarray(np.random.default_rng(1).integers(0, 19, (40, 40), dtype=np.uint8), mode="L").save(full)
    truncated.write_bytes(full.read_bytes()[:200])
    with pytest.raises(IOError, match=f"^cannot read label file {truncated}: "):
        read_label_indices(str(truncated))
    with pytest.raises(IOError, match=f"^cannot read image file {truncated}: "):
        read_image(str(truncated))


def test_write_label_png_round_trip(tmp_path):
    label = np.array([[0, 1, 255], [18, 3, 7]], dtype=np.uint8)
    path = str(tmp_path / "deep" / "dir" / "x.png")
    write_label_png(path, label)
    np.testing.assert_array_equal(read_label_indices(path), label)


# ------------------------------------------------------------------ errors of dataset files ---
def _city_tree(root, names, size=(8, 4), label_size=None, label_value=7, split="val"):
    w, h = size
    lw, lh = label_size or size
    for n in names:
        city = n.split("/")[0]
        img_dir = os.path.join(root, "cityscapes", "leftImg8bit", split, city)
        lab_dir = os.path.join(root, "cityscapes", "gtFine", split, city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lab_dir, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(os.path.join(img_dir, os.path.basename(n)))
        base = os.path.basename(n)[: -len("_leftImg8bit.png")]
        Image.fromarray(np.full((lh, lw), label_value, np.uint8)).save(
            os.path.join(lab_dir, base + "_gtFine_labelIds.png"))


def _cfg(root, *opts):
    return load_config("", ["DATASETS.DATA_DIR", str(root), "INPUT.TEST_SIZE", "[8, 4]",
                            "INPUT.TARGET_SIZE", "[8, 4]", "INPUT.SOURCE_SIZE", "[8, 4]", *opts])


def test_label_of_wrong_size_names_the_file(tmp_path):
    _city_tree(tmp_path, ["aachen/aachen_000000_000001_leftImg8bit.png"], size=(8, 4), label_size=(6, 4))
    ds = build_dataset(_cfg(tmp_path), "cityscapes_val", train=False)
    with pytest.raises(ValueError) as e:
        ds[0]
    assert "aachen_000000_000001_gtFine_labelIds.png" in str(e.value)


def test_missing_and_corrupt_dataset_files_name_the_file(tmp_path):
    names = ["aachen/aachen_000000_000001_leftImg8bit.png", "aachen/aachen_000000_000002_leftImg8bit.png"]
    _city_tree(tmp_path, names)
    lab = tmp_path / "cityscapes" / "gtFine" / "val" / "aachen" / "aachen_000000_000001_gtFine_labelIds.png"
    lab.unlink()
    img = tmp_path / "cityscapes" / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000002_leftImg8bit.png"
    img.write_bytes(b"\x00" * 30)
    ds = build_dataset(_cfg(tmp_path), "cityscapes_val", train=False)
    with pytest.raises(FileNotFoundError) as e:
        ds[0]
    assert str(lab) in str(e.value)
    with pytest.raises(IOError) as e:
        ds[1]
    assert str(img) in str(e.value)


def test_missing_dataset_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        build_dataset(_cfg(tmp_path), "cityscapes_val", train=False)


def test_pseudo_labels_out_of_range_name_the_file(tmp_path):
    names = ["aachen/aachen_000000_000001_leftImg8bit.png"]
    _city_tree(tmp_path, names, split="train")
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    bad = np.zeros((4, 8), np.uint8)
    bad[1, 2] = 19  # K = 19: 19 is neither a class nor 255
    write_label_png(str(pseudo / "aachen_000000_000001_leftImg8bit.png"), bad)
    cfg = _cfg(tmp_path, "DATASETS.PSEUDO_DIR", str(pseudo), "INPUT.SELF_TRAIN_BASE_SIZE", "[8, 4]",
               "INPUT.SELF_TRAIN_CROP", "[8, 4]")
    ds = build_dataset(cfg, "cityscapes_pseudo", train=True)
    with pytest.raises(ValueError) as e:
        ds[0]
    assert str(pseudo / "aachen_000000_000001_leftImg8bit.png") in str(e.value)
    assert "19" in str(e.value)


# -------------------------------------------------------------------------- shared fixtures ---
def test_fixture_labelids_map_to_fixture_trainids(shared_fixtures):
    gt = os.path.join(shared_fixtures, "mmseg_pseudo_cityscapes", "gtFine")
    label_ids = read_label_indices(os.path.join(gt, "frankfurt_000000_000294_gtFine_labelIds.png"))
    train_ids = read_label_indices(os.path.join(gt, "frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    assert label_ids.shape == train_ids.shape == (128, 256)
    mapped = L.labelid_to_trainid_lut(19)[label_ids]
    differ = int((mapped != train_ids).sum())
    assert differ <= 77, differ
    assert set(np.unique(mapped).tolist()) <= set(np.unique(train_ids).tolist()) | {255}
    # the same LUT through the dataset's own slow path: per-pixel dictionary lookup
    slow = np.vectorize(lambda v: CITYSCAPES_19.get(int(v), 255))(label_ids)
    np.testing.assert_array_equal(mapped, slow)


def test_fixture_instance_ids_hold_label_ids(shared_fixtures):
    gt = os.path.join(shared_fixtures, "mmseg_pseudo_cityscapes", "gtFine")
    inst = read_label_indices(os.path.join(gt, "frankfurt_000000_000294_gtFine_instanceIds.png"))
    label_ids = read_label_indices(os.path.join(gt, "frankfurt_000000_000294_gtFine_labelIds.png"))
    assert inst.dtype == np.uint16 and inst.max() > 255  # all 16 bits kept
    # objects hold labelId*1000+k, stuff holds the labelId itself
    objects = inst >= 1000
    assert objects.any() and (~objects).any()
    np.testing.assert_array_equal(inst[objects] // 1000, label_ids[objects])
    np.testing.assert_array_equal(inst[~objects], label_ids[~objects])
    assert set(np.unique(inst[objects] // 1000).tolist()) == {24, 26}  # persons and cars


def test_fixture_cityscapes_list_file_order(shared_fixtures, tmp_path):
    with open(os.path.join(shared_fixtures, "spcl_lists", "cityscapes_val_list.txt")) as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    assert len(lines) == 500
    chosen = [lines[3], lines[0], lines[470], lines[300], lines[1]]  # not in sorted order
    assert chosen != sorted(chosen)
    assert len({c.split("/")[0] for c in chosen}) > 1  # several city folders
    extra = ["zzz/zzz_000000_000000_leftImg8bit.png"]  # on disk but not in the list
    _city_tree(tmp_path, chosen + extra)
    list_file = tmp_path / "val_list.txt"
    list_file.write_text("\n".join(chosen) + "\n")
    ds = build_dataset(_cfg(tmp_path, "DATASETS.TEST_LIST", str(list_file)), "cityscapes_val", train=False)
    assert len(ds) == len(chosen)
    assert [ds[i]["name"] for i in range(len(ds))] == [os.path.basename(c) for c in chosen]
    assert ds[0]["label"].unique().tolist() == [0]  # labelId 7 → road
    # without the list: every file on disk, sorted
    ds_all = build_dataset(_cfg(tmp_path), "cityscapes_val", train=False)
    assert [os.path.relpath(p, str(tmp_path / "cityscapes" / "leftImg8bit" / "val")) for p, _ in ds_all.items] \
        == sorted(chosen + extra)


def test_label_write_that_fails_half_way_leaves_no_partial_file_and_names_it(tmp_path, monkeypatch):
    """A full disk while a pseudo label is written: a truncated PNG left behind would be read back later as a
    wrong label, so it is removed, and the error names the file and the likely cause."""
    import errno

    path = tmp_path / "labels" / "a.png"
    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n")  # the first bytes reach the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match=r"cannot write label file .*a\.png: No space left on device \(disk full"):
        write_label_png(str(path), np.zeros((4, 6), np.uint8))
    assert not path.exists()
    monkeypatch.setattr(Image.Image, "save", real_save)
    write_label_png(str(path), np.full((4, 6), 7, np.uint8))  # and a retry writes the label
    np.testing.assert_array_equal(read_label_indices(str(path)), np.full((4, 6), 7))


def test_a_write_error_hints_at_a_full_disk_only_when_the_disk_is_full(tmp_path):
    """Another error of the system (here EIO) is not a full disk: the message gives the system's reason alone.
    A folder where the file should go is named as such before anything is written."""
    import errno

    from spcl.utils.io import atomic_torch_save, atomic_write

    def broken_device(f):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as info:
        atomic_write(str(tmp_path / "x.json"), broken_device, binary=False, what="record")
    assert f"cannot write record {tmp_path / 'x.json'}: Input/output error;" in str(info.value)
    assert "disk full" not in str(info.value) and os.listdir(tmp_path) == []
    folder = tmp_path / "model.pth"
    folder.mkdir()
    with pytest.raises(OSError) as info:
        atomic_torch_save({"x": 1}, str(folder))
    assert f"cannot write checkpoint {folder}: it is a folder" in str(info.value)
    assert "disk full" not in str(info.value) and os.listdir(folder) == [] and os.listdir(tmp_path) == ["model.pth"]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.png").mkdir()
    with pytest.raises(OSError) as info:
        write_label_png(str(tmp_path / "labels" / "a.png"), np.zeros((4, 6), np.uint8))
    assert "cannot write label file" in str(info.value) and "disk full" not in str(info.value)


def _with_orientation(path, arr, orientation):
    """Save H×W×3 uint8 `arr` as a PNG whose EXIF says to turn it (1 = as stored, 3 = 180°, 6 = 90° clockwise,
    8 = 90° anticlockwise), as phones write portrait photos."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif)


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_images_are_read_as_a_viewer_shows_them_turned_by_their_exif_orientation(tmp_path, orientation, turn):
    from spcl.data.io import displayed_size

    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10  # every pixel different: a turn shows
    path = str(tmp_path / "photo.png")
    _with_orientation(path, arr, orientation)
    shown = turn(arr)
    np.testing.assert_array_equal(np.asarray(read_image(path)), shown)
    with Image.open(path) as img:
        assert displayed_size(img) == (shown.shape[1], shown.shape[0])


def test_a_16_bit_greyscale_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 40000]], dtype=np.uint16)
    path = str(tmp_path / "grey16.png")
    write_png16(path, values)
    expected = np.rint(values * (255 / 65535)).astype(np.uint8)  # 0, 1, 128, 255, 4, 156
    np.testing.assert_array_equal(np.asarray(read_image(path)), np.repeat(expected[..., None], 3, axis=2))
