"""spcl/data/check.py: each kind of bad file is found and named with its reason, the clean list
excludes exactly the bad items and loads as DATASETS.*_LIST, preflight caches by file list + sizes +
mtimes and raises one DataError naming the files."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import write_png16
from test_dataset_roles import folder_val_cfg  # the toy's Cityscapes val set (labelIds) as folder_val
from spcl.config import load_config
from spcl.data import build_dataset
from spcl.data import check as C
from spcl.data.check import (DataError, check_dataset, dataset_for_check, default_cache_dir, known_size,
                             list_entry, preflight, write_list)
from spcl.data.datasets import SynthiaDataset
from spcl.toy import generate_toy_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_root(tmp_path):
    root = tmp_path / "data"
    generate_toy_dataset(root, seed=0, num_source=6, num_target_train=4, num_target_val=2, size=(64, 32))
    return str(root)


def break_gta5(root: str) -> dict[str, str]:
    """Break four GTA5 items (one way each); {bad path: expected reason prefix}."""
    g = os.path.join(root, "gta5")
    img1 = os.path.join(g, "images", "00001.png")
    data = open(img1, "rb").read()
    with open(img1, "wb") as f:  # truncated PNG image: the header still reads
        f.write(data[: len(data) // 2])
    assert Image.open(img1).size == (64, 32)
    lab2 = os.path.join(g, "labels", "00002.png")
    Image.open(lab2).resize((32, 16), Image.NEAREST).save(lab2)  # label size differs from its image
    lab3 = os.path.join(g, "labels", "00003.png")
    im = Image.open(lab3)
    arr = np.array(im)
    arr[0, 0] = 200  # palette index 200: no Cityscapes labelId (the LUT would hide it as 255)
    out = Image.fromarray(arr, "P")
    out.putpalette(im.getpalette())
    out.save(lab3)
    lab4 = os.path.join(g, "labels", "00004.png")
    os.remove(lab4)  # missing label
    return {img1: "unreadable or truncated image", lab2: "label size 32x16 differs from its image's 64x32",
            lab3: "label id out of range", lab4: "missing label file"}


def cfg_for(root, out, *opts):
    return load_config(os.path.join(REPO, "configs", "toy.yaml"),
                       ["DATASETS.DATA_DIR", root, "DATASETS.TOY.GENERATE", "False", "OUTPUT_DIR", str(out),
                        *opts])


def test_each_bad_file_named_with_its_reason_and_clean_list_excludes_exactly_them(tmp_path):
    root = make_root(tmp_path)
    expected = break_gta5(root)
    cfg = cfg_for(root, tmp_path / "out")
    result = check_dataset(dataset_for_check(cfg, "gta5_train"), "gta5_train")
    assert {p for p, _ in result.bad} == set(expected)
    for path, reason in result.bad:
        assert reason.startswith(expected[path]), (path, reason)
    assert "[200]" in dict(result.bad)[os.path.join(root, "gta5", "labels", "00003.png")]
    assert result.bad_lines()[0] == f"{result.bad[0][0]}: {result.bad[0][1]}"
    assert (result.num_items, result.bad_items, result.num_files) == (6, 4, 12)  # 6 images + 6 required labels
    assert result.clean == ["00005.png", "00006.png"]
    assert not result.ok

    # the clean list loads as DATASETS.SOURCE_LIST and every item of it reads
    list_path = str(tmp_path / "clean.txt")
    write_list(list_path, result.clean)
    ds = build_dataset(cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", list_path), "gta5_train", train=False)
    assert len(ds) == 2
    assert [os.path.basename(p) for p, _ in ds.items] == ["00005.png", "00006.png"]
    assert ds[1]["label"].shape == (32, 64)
    again = check_dataset(ds, "gta5_train")
    assert again.ok and again.clean == result.clean


def test_clean_data_passes_and_lists_every_item(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    for name, n in (("gta5_train", 6), ("cityscapes_train", 4), ("cityscapes_val", 2)):
        result = check_dataset(dataset_for_check(cfg, name), name)
        assert result.ok and result.bad == [] and len(result.clean) == n == result.num_items
    # a Cityscapes clean list (city/name_leftImg8bit.png) selects the same items as DATASETS.TEST_LIST
    val = check_dataset(dataset_for_check(cfg, "cityscapes_val"), "cityscapes_val")
    assert all(e.startswith("valville/") and e.endswith("_leftImg8bit.png") for e in val.clean)
    write_list(str(tmp_path / "val.txt"), val.clean[1:])
    ds = build_dataset(cfg_for(root, tmp_path / "out", "DATASETS.TEST_LIST", str(tmp_path / "val.txt")),
                       "cityscapes_val", train=False)
    full = dataset_for_check(cfg, "cityscapes_val")
    assert ds.items == full.items[1:]


def test_truncated_label_and_missing_image_are_bad(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    lab = os.path.join(root, "cityscapes", "gtFine", "val", "valville", "valville_000000_000000_gtFine_labelIds.png")
    data = open(lab, "rb").read()
    with open(lab, "wb") as f:
        f.write(data[: len(data) - 30])
    img = os.path.join(root, "cityscapes", "leftImg8bit", "val", "valville", "valville_000000_000001_leftImg8bit.png")
    os.remove(img)  # named by a list file, so the item is still there
    write_list(str(tmp_path / "val.txt"), ["valville/valville_000000_000000_leftImg8bit.png",
                                           "valville/valville_000000_000001_leftImg8bit.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.TEST_LIST", str(tmp_path / "val.txt"))
    result = check_dataset(dataset_for_check(cfg, "cityscapes_val"), "cityscapes_val")
    reasons = dict(result.bad)
    assert set(reasons) == {lab, img}
    assert reasons[lab].startswith("unreadable or truncated label")
    assert reasons[img] == "missing image file"
    assert result.clean == []


def test_target_labels_optional_but_checked_when_present(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    gt = os.path.join(root, "cityscapes", "gtFine", "train")
    os.remove(os.path.join(gt, "toytown", "toytown_000000_000000_gtFine_labelIds.png"))
    result = check_dataset(dataset_for_check(cfg, "cityscapes_train"), "cityscapes_train")
    assert result.ok and len(result.clean) == 4 and result.num_files == 7
    # a present label with a labelId Cityscapes does not have is still reported
    lab = os.path.join(gt, "mockburg", "mockburg_000000_000001_gtFine_labelIds.png")
    Image.fromarray(np.full((32, 64), 34, np.uint8)).save(lab)
    result = check_dataset(dataset_for_check(cfg, "cityscapes_train"), "cityscapes_train")
    assert [p for p, _ in result.bad] == [lab] and "34" in result.bad[0][1]


def test_pseudo_labels_use_the_datasets_own_range_check_and_may_be_smaller(tmp_path):
    root = make_root(tmp_path)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    names = sorted(os.listdir(os.path.join(root, "cityscapes", "leftImg8bit", "train", "mockburg"))) + \
        sorted(os.listdir(os.path.join(root, "cityscapes", "leftImg8bit", "train", "toytown")))
    for i, n in enumerate(names):  # pseudo labels at half size are resized, not rejected
        Image.fromarray(np.full((16, 32), 255 if i else 3, np.uint8)).save(pseudo / n)
    Image.fromarray(np.full((16, 32), 19, np.uint8)).save(pseudo / names[2])  # trainId 19 with K = 19
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.PSEUDO_DIR", str(pseudo))
    result = check_dataset(dataset_for_check(cfg, "cityscapes_pseudo"), "cityscapes_pseudo")
    assert [p for p, _ in result.bad] == [str(pseudo / names[2])]
    assert result.bad[0][1].startswith("label id out of range") and "19" in result.bad[0][1]
    assert len(result.clean) == 3 and all("/" in e for e in result.clean)


def test_synthia_ids_outside_the_class_map_are_bad_and_clean_list_loads(tmp_path):
    root = tmp_path / "data"
    base = root / "synthia" / "RAND_CITYSCAPES"
    (base / "RGB").mkdir(parents=True)
    (base / "GT" / "LABELS").mkdir(parents=True)
    for i, top in enumerate((22, 23, 3)):
        stem = f"{i:07d}.png"
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(base / "RGB" / stem)
        ids = np.full((8, 16), 3, np.uint16)
        ids[0, 0] = top
        write_png16(str(base / "GT" / "LABELS" / stem), np.stack([ids, ids * 0, ids * 0], -1))
    cfg = cfg_for(str(root), tmp_path / "out", "DATASETS.SOURCE", "synthia_train", "MODEL.NUM_CLASSES", "16")
    ds = dataset_for_check(cfg, "synthia_train")
    assert isinstance(ds, SynthiaDataset)
    result = check_dataset(ds, "synthia_train")
    assert [p for p, _ in result.bad] == [str(base / "GT" / "LABELS" / "0000001.png")]
    assert "23" in result.bad[0][1] and result.bad[0][1].startswith("label id out of range")
    assert result.clean == ["0000000.png", "0000002.png"]
    write_list(str(tmp_path / "s.txt"), result.clean)
    ds2 = build_dataset(cfg_for(str(root), tmp_path / "out", "DATASETS.SOURCE", "synthia_train",
                                "MODEL.NUM_CLASSES", "16", "DATASETS.SOURCE_LIST", str(tmp_path / "s.txt")),
                        "synthia_train", train=False)
    assert ds2.items == [ds.items[0], ds.items[2]]


def test_list_entry_falls_back_to_absolute_paths_that_still_load(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    ds = dataset_for_check(cfg, "gta5_train")
    img, lab = ds.items[0]
    assert list_entry(ds, img, lab) == "00001.png"
    # an absolute list entry (image and label paths equal) is kept absolute
    assert list_entry(ds, img, img) == os.path.abspath(img)


def test_known_size_is_a_warning_only_for_the_full_catalog_set(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    assert known_size(cfg, "gta5_train") == 24966 and known_size(cfg, "cityscapes_val") == 500
    result = check_dataset(dataset_for_check(cfg, "gta5_train"), "gta5_train",
                           expected_size=known_size(cfg, "gta5_train"))
    assert result.ok and result.warnings == ["gta5_train has 6 items; the full dataset has 24,966"]
    write_list(str(tmp_path / "l.txt"), ["00001.png"])
    cfg2 = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", str(tmp_path / "l.txt"))
    assert known_size(cfg2, "gta5_train") is None
    assert known_size(cfg, "synthia_train") == 9400 and known_size(cfg, "synscapes_train") == 25000
    assert known_size(cfg, "cityscapes_train") == 2975


# -------------------------------------------------------------------------------- preflight
def test_preflight_caches_and_a_touched_file_invalidates(tmp_path, count_reads):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    cache = default_cache_dir(cfg)
    names = ["gta5_train", "cityscapes_train", "cityscapes_val"]
    results = preflight(cfg, names, cache, progress=False)
    assert len(count_reads) == 12 and set(results) == set(names)
    assert all(os.path.isfile(os.path.join(cache, f"data_check_{n}.json")) for n in names)
    assert os.path.getsize(os.path.join(cache, "data_check_gta5_train.json")) < 2000

    count_reads.clear()
    again = preflight(cfg, names, cache, progress=False)
    assert count_reads == []  # nothing re-read
    assert {n: r.num_items for n, r in again.items()} == {"gta5_train": 6, "cityscapes_train": 4, "cityscapes_val": 2}

    lab = os.path.join(root, "gta5", "labels", "00003.png")
    st = os.stat(lab)
    os.utime(lab, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: same bytes, new mtime
    preflight(cfg, names, cache, progress=False)
    assert len(count_reads) == 6  # gta5_train re-checked, the Cityscapes sets from the cache
    assert set(count_reads) == {p for p, _ in dataset_for_check(cfg, "gta5_train").items}


def test_preflight_raises_one_data_error_naming_the_files_and_the_fix(tmp_path, count_reads):
    root = make_root(tmp_path)
    expected = break_gta5(root)
    cfg = cfg_for(root, tmp_path / "out")
    cache = default_cache_dir(cfg)
    with pytest.raises(DataError) as info:
        preflight(cfg, ["gta5_train", "cityscapes_val"], cache, progress=False)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    for path, reason in expected.items():
        assert f"{path}: {reason}" in msg
    assert "tools/check_data.py" in msg and "clean_gta5_train.txt as DATASETS.SOURCE_LIST" in msg
    assert "cityscapes_val" not in msg  # only the broken set is named
    # a cached failure fails again without reading a file
    count_reads.clear()
    with pytest.raises(DataError, match="00004.png: missing label file"):
        preflight(cfg, ["gta5_train"], cache, progress=False)
    assert count_reads == []


def test_a_data_error_of_a_second_role_names_its_own_clean_list(tmp_path):
    """gta5_train as source (good list) and test (a list with a missing label): the error points at the clean list
    tools/check_data.py writes for the test role, clean_gta5_train.test.txt, as DATASETS.TEST_LIST."""
    root = make_root(tmp_path)
    os.remove(os.path.join(root, "gta5", "labels", "00005.png"))
    src, tst = tmp_path / "src.txt", tmp_path / "tst.txt"
    write_list(str(src), ["00001.png", "00002.png"])
    write_list(str(tst), ["00005.png", "00006.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", str(src), "DATASETS.TEST", "gta5_train",
                  "DATASETS.TEST_LIST", str(tst))
    with pytest.raises(DataError) as info:
        preflight(cfg, ["gta5_train"], default_cache_dir(cfg), progress=False)
    msg = str(info.value)
    assert "gta5_train (as test): 1 bad file(s) in 1 of 2 items" in msg
    assert "use clean_gta5_train.test.txt as DATASETS.TEST_LIST." in msg and "SOURCE_LIST" not in msg
    assert C.clean_list_name("gta5_train (as test)") == "clean_gta5_train.test.txt"
    assert C.clean_list_name("gta5_train") == "clean_gta5_train.txt"


def test_data_error_names_at_most_ten_files(tmp_path):
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    for p, _ in dataset_for_check(cfg, "gta5_train").items:
        os.remove(p.replace("images", "labels"))
    for _, p in dataset_for_check(cfg, "cityscapes_val").items:
        os.remove(p)
    results = {n: check_dataset(dataset_for_check(cfg, n), n) for n in ("gta5_train", "cityscapes_val")}
    old = C.MAX_NAMED
    try:
        C.MAX_NAMED = 5
        msg = C.format_error(cfg, results, {})
    finally:
        C.MAX_NAMED = old
    assert msg.count(": missing ") == 5 and "… and 3 more" in msg


def test_preflight_missing_folder_is_a_data_error(tmp_path):
    cfg = cfg_for(str(tmp_path / "nowhere"), tmp_path / "out")
    with pytest.raises(DataError, match=r"gta5_train: dataset folder not found: .*nowhere"):
        preflight(cfg, ["gta5_train"], str(tmp_path / "cache"), progress=False)


def test_memory_holds_no_decoded_image(tmp_path, monkeypatch):
    """check_item returns only paths and reasons; check_dataset keeps list entries, not arrays."""
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    result = check_dataset(dataset_for_check(cfg, "gta5_train"), "gta5_train")
    for value in vars(result).values():
        assert not isinstance(value, np.ndarray)
        if isinstance(value, list):
            assert all(isinstance(v, (str, tuple)) for v in value)


def test_train_labels_outside_the_classes_are_bad_after_the_datasets_table(tmp_path):
    """The [0, K) ∪ {255} check runs on the train labels the dataset's own table gives."""
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out")
    ds = dataset_for_check(cfg, "gta5_train")
    ds.lut = ds.lut.copy()
    ds.lut[7] = 19  # road → a class id K = 19 does not have
    result = check_dataset(ds, "gta5_train")
    assert len(result.bad) == 6 and all(r.startswith("label id out of range") and "[19]" in r for _, r in result.bad)


def test_the_size_check_of_a_png_decodes_no_pixels_and_sees_its_exif_orientation(tmp_path, monkeypatch):
    """The check reads every PNG's chunks (verify) and its EXIF orientation from the header, decoding no
    pixels: Pillow's own getexif() on a PNG decodes the whole image, ~12× the check's cost at GTA5's size."""
    from PIL import PngImagePlugin

    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(str(tmp_path / "turned.png"), exif=exif)
    Image.fromarray(arr).save(str(tmp_path / "plain.png"))
    decoded = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self, *a: decoded.append(1) or real(self, *a))
    assert C._image_size(str(tmp_path / "turned.png")) == (4, 6)  # shown turned by 90°: W and H swap
    assert C._image_size(str(tmp_path / "plain.png")) == (6, 4)
    assert decoded == []


# ------------------------------------------------------------ an id map that maps none of the label values
def val_labels(root):
    folder = os.path.join(root, "cityscapes", "gtFine", "val", "valville")
    return [os.path.join(folder, f"valville_000000_00000{i}_gtFine_labelIds.png") for i in range(2)]


def test_an_id_map_that_maps_none_of_the_label_values_is_a_data_error(tmp_path, count_reads):
    """ID_MAP keys 100 and 101, labels holding labelIds: every pixel would be 255. The check names the key, the
    values it saw (those of the first label file), the map's keys; the cached result fails again unread."""
    root = make_root(tmp_path)
    first = val_labels(root)[0]
    seen = sorted(np.unique(np.array(Image.open(first))).tolist())
    assert 255 not in seen and len(seen) > 8
    cfg = folder_val_cfg(root, tmp_path / "out", "DATASETS.FOLDER.ID_MAP", "[[100, 0], [101, 1]]")
    with pytest.raises(DataError) as info:
        preflight(cfg, ["folder_val"], default_cache_dir(cfg), progress=False)
    shown = ", ".join(str(v) for v in seen[:8])
    expected = (f"  folder_val: DATASETS.FOLDER.ID_MAP (or ID_MAP_FILE) maps none of the label values it saw to a "
                f"class, so every pixel of the 2 label file(s) checked is ignore (255): values seen [{shown}, …] "
                f"({len(seen)} in all) (e.g. in {first}); the map's keys (raw ids mapped to a class) are [100, 101].")
    assert expected in str(info.value)
    assert "Fix: repair" not in str(info.value)  # no file is bad: the clean lists would not help
    count_reads.clear()
    with pytest.raises(DataError, match=r"maps none of the label values it saw"):
        preflight(cfg, ["folder_val"], default_cache_dir(cfg), progress=False)
    assert count_reads == []  # from the cache


@pytest.mark.parametrize("case", ["maps a value of the first file only", "maps a value of the second file only",
                                  "labels hold only 255", "no map"])
def test_the_id_map_check_fires_only_when_labels_with_values_all_become_ignore(tmp_path, case):
    """ID_MAP [[12, 5]] / [[13, 5]]: 12 is only in the first label file, 13 only in the second, whose pixels then
    have a class; labels that hold only 255 are unlabelled, whatever the map; without a map the files hold train
    ids (here all 255)."""
    root = make_root(tmp_path)
    first, second = val_labels(root)
    assert 12 in np.array(Image.open(first)) and 12 not in np.array(Image.open(second))
    assert 13 not in np.array(Image.open(first)) and 13 in np.array(Image.open(second))
    opts = ["DATASETS.FOLDER.ID_MAP", "[[12, 5]]" if case == "maps a value of the first file only" else "[[13, 5]]"]
    if case in ("labels hold only 255", "no map"):
        for path in (first, second):
            Image.fromarray(np.full((32, 64), 255, np.uint8), "L").save(path)
    if case == "no map":
        opts = []
    cfg = folder_val_cfg(root, tmp_path / "out", *opts)
    result = check_dataset(dataset_for_check(cfg, "folder_val"), "folder_val")
    assert result.ok and result.errors == [] and result.num_files == 4


@pytest.mark.parametrize("made_by", ["stage", "gen_pseudo", "elsewhere"])
def test_bad_pseudo_labels_are_written_again_not_downloaded(tmp_path, made_by):
    """A bad file among the pseudo labels gets the way to make them again: a pipeline's stage folder
    (it has a manifest) reruns when deleted, a tools/gen_pseudo.py folder (DIR/labels) by running the tool again
    with that DIR, labels in a folder of another name by writing them anew and pointing DATASETS.PSEUDO_DIR there
    (`--output` of their parent would write its labels/ beside them). Only files the run made: no "re-download"."""
    made_in = tmp_path / {"stage": "4_pseudo_labels", "gen_pseudo": "gen", "elsewhere": "mine"}[made_by]
    labels = made_in / ("pseudo" if made_by == "elsewhere" else "labels")
    labels.mkdir(parents=True)
    if made_by == "stage":
        (made_in / "manifest.json").write_text("{}")
    cfg = cfg_for(str(tmp_path / "data"), tmp_path / "out", "DATASETS.PSEUDO_DIR", str(labels))

    def bad(name, *paths):
        return {name: C.CheckResult(name, num_items=2, bad=[(str(p), "missing label file") for p in paths],
                                    bad_items=1)}

    msg = C.format_error(cfg, bad("cityscapes_pseudo", labels / "a.png"), {})
    how = {"stage": f"delete the stage folder {made_in} and run again: that stage and the stages after it rerun",
           "gen_pseudo": f"run tools/gen_pseudo.py again with --output {made_in}",
           "elsewhere": "write them again with tools/gen_pseudo.py --checkpoint C --output DIR, which writes "
                        "DIR/labels, and set DATASETS.PSEUDO_DIR DIR/labels"}[made_by]
    assert msg.splitlines()[-1] == (f"The pseudo labels in DATASETS.PSEUDO_DIR {labels} are made by the model, "
                                    f"not downloaded: {how}.")
    assert "re-download" not in msg
    # a bad file elsewhere, even in a folder whose name starts like it, gets only the general fix
    elsewhere = C.format_error(cfg, bad("gta5_train", made_in / (labels.name + "_old") / "a.png"), {})
    assert "pseudo labels" not in elsewhere and "re-download" in elsewhere
    both = C.format_error(cfg, bad("cityscapes_pseudo", labels / "a.png", tmp_path / "data" / "b.png"), {})
    assert "re-download" in both and both.splitlines()[-1].startswith("The pseudo labels")


def test_a_bad_file_of_the_generated_toy_is_written_again(tmp_path, monkeypatch):
    """With DATASETS.TOY.GENERATE the data are the run's own: the fix deletes the two generated folders (never
    DATA_DIR itself, which may hold the run's OUTPUT_DIR), and following it writes the same bytes again."""
    monkeypatch.chdir(tmp_path)  # an unset DATASETS.PSEUDO_DIR ("") must not count as the current folder
    root = tmp_path / "data"
    args = dict(seed=3, num_source=2, num_target_train=2, num_target_val=1, size=(32, 16))
    generate_toy_dataset(root, **args)
    source_label = root / "gta5" / "labels" / "00001.png"
    original = source_label.read_bytes()
    line = (f"DATASETS.DATA_DIR {root} holds the generated toy dataset (DATASETS.TOY.GENERATE): delete its folders "
            f"{root / 'gta5'} and {root / 'cityscapes'} and run again, tools/train.py writes them again, byte for byte.")
    bad = {"gta5_train": C.CheckResult("gta5_train", num_items=2, bad=[(str(source_label), "missing label file")],
                                       bad_items=1)}
    generated = load_config(os.path.join(REPO, "configs", "toy.yaml"), ["DATASETS.DATA_DIR", str(root)])
    msg = C.format_error(generated, bad, {})
    assert msg.splitlines()[-1] == line and "pseudo labels" not in msg and "re-download" not in msg
    source_label.write_bytes(b"truncated")  # the bad file; a run's folder inside DATA_DIR must survive the fix
    (root / "run").mkdir()
    (root / "run" / "model_final.pth").write_bytes(b"weights")
    for folder in line.split("delete its folders ")[1].split(" and run again")[0].split(" and "):
        shutil.rmtree(folder)
    generate_toy_dataset(root, **args)
    assert source_label.read_bytes() == original and (root / "run" / "model_final.pth").read_bytes() == b"weights"
    assert "generated toy" not in C.format_error(cfg_for(str(root), tmp_path / "out"), bad, {})  # GENERATE False
    elsewhere = load_config(os.path.join(REPO, "configs", "toy.yaml"), ["DATASETS.DATA_DIR", str(tmp_path / "d")])
    assert "generated toy" not in C.format_error(elsewhere, bad, {})  # a file outside the toy's folder


def test_an_image_or_label_replaced_by_a_folder_is_named_as_a_folder_not_as_missing(tmp_path):
    """Listed by a list file, the item stays; the check calls each file a folder, a missing one missing."""
    root = make_root(tmp_path)
    city = os.path.join(root, "cityscapes")
    img = os.path.join(city, "leftImg8bit", "val", "valville", "valville_000000_000000_leftImg8bit.png")
    lab = os.path.join(city, "gtFine", "val", "valville", "valville_000000_000001_gtFine_labelIds.png")
    for path in (img, lab):
        os.remove(path)
        os.makedirs(path)
    write_list(str(tmp_path / "val.txt"), ["valville/valville_000000_000000_leftImg8bit.png",
                                           "valville/valville_000000_000001_leftImg8bit.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.TEST_LIST", str(tmp_path / "val.txt"))
    ds = dataset_for_check(cfg, "cityscapes_val")
    reasons = dict(check_dataset(ds, "cityscapes_val").bad)
    assert reasons == {img: "a folder, not an image file", lab: "a folder, not a label file"}
    with pytest.raises(IsADirectoryError, match=f"image file {img} is a folder"):
        ds[0]
    with pytest.raises(IsADirectoryError, match=f"label file {lab} is a folder"):
        ds[1]
    optional = dataset_for_check(cfg, "cityscapes_val")
    optional.labels = "optional"  # (a missing label would read as None here; a folder is still an error)
    with pytest.raises(IsADirectoryError, match=f"label file {lab} is a folder"):
        optional[1]
    assert dict(check_dataset(optional, "cityscapes_val").bad)[lab] == "a folder, not a label file"  # as it reads
    os.rmdir(lab)  # gone altogether: missing, as before
    assert dict(check_dataset(ds, "cityscapes_val").bad)[lab] == "missing label file"


def test_counts_name_every_bad_file_but_count_an_item_once(tmp_path):
    """`num_files` counts images and the labels present or required (a folder in a label's place is present,
    and bad); `bad_items` counts items with at least one bad file, so an item with a bad image and a missing
    label is one bad item with two bad files."""
    root = make_root(tmp_path)
    g = os.path.join(root, "gta5")
    img1, lab1 = os.path.join(g, "images", "00001.png"), os.path.join(g, "labels", "00001.png")
    with open(img1, "wb") as f:
        f.write(b"not a png")
    os.remove(lab1)
    lab2 = os.path.join(g, "labels", "00002.png")
    os.remove(lab2)
    os.makedirs(lab2)
    result = check_dataset(dataset_for_check(cfg_for(root, tmp_path / "out"), "gta5_train"), "gta5_train")
    assert sorted(p for p, _ in result.bad) == sorted([img1, lab1, lab2])
    assert (result.num_items, result.num_files, result.bad_items, len(result.clean)) == (6, 12, 2, 4)


def test_a_name_read_with_required_labels_in_a_second_role_is_checked_again(tmp_path):
    """cityscapes_train as the target (labels optional) and as the test set (labels required), one list (the
    whole set) for both: a missing label is fine for the target but fails the test role, so both are checked."""
    root = make_root(tmp_path)
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.TARGET", "cityscapes_train", "DATASETS.TEST", "cityscapes_train")
    assert C.check_units(cfg, ["cityscapes_train"]) == [("cityscapes_train", "target"), ("cityscapes_train", "test")]
    missing = dataset_for_check(cfg, "cityscapes_train", "test").items[0][1]
    os.remove(missing)
    with pytest.raises(DataError) as info:
        preflight(cfg, ["cityscapes_train"], str(tmp_path / "cache"), progress=False)
    assert "cityscapes_train (as test): 1 bad file(s) in 1 of" in str(info.value)
    assert f"{missing}: missing label file" in str(info.value)
    assert "cityscapes_train: " not in str(info.value)  # the target role passes


def test_a_data_error_with_few_bad_files_names_them_all_and_no_more(tmp_path):
    """Up to MAX_NAMED bad files are named; fewer are all named, with no "… and N more" line."""
    root = make_root(tmp_path)
    break_gta5(root)
    cfg = cfg_for(root, tmp_path / "out")
    results = {"gta5_train": check_dataset(dataset_for_check(cfg, "gta5_train"), "gta5_train")}
    msg = C.format_error(cfg, results, {})
    assert len(results["gta5_train"].bad) == 4 < C.MAX_NAMED
    assert all(f"    {line}" in msg.splitlines() for line in results["gta5_train"].bad_lines())
    assert "more" not in msg


def test_the_id_map_check_says_nothing_of_labels_the_check_does_not_read(tmp_path):
    """A folder set with an ID_MAP that maps none of its label values, read without labels (`labels` none, e.g.
    a test set measured by nothing): no label is decoded, so the map is not judged (and no file is bad)."""
    root = make_root(tmp_path)
    cfg = folder_val_cfg(root, tmp_path / "out", "DATASETS.FOLDER.ID_MAP", "[[100, 0], [101, 1]]")
    ds = build_dataset(cfg, "folder_val", train=False, role="test", labels="none")
    assert all(lab and os.path.isfile(lab) for _, lab in ds.items)  # the label files are there, unread
    result = check_dataset(ds, "folder_val")
    assert result.ok and result.errors == [] and result.num_files == len(ds.items)
