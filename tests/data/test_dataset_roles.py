"""One dataset name in several roles of a run (DATASETS.SOURCE / TARGET / TEST): each read is selected by
its role's list file, in build_dataset and in the data check alike; the data-check cache is keyed by the
label decoding table too (DATASETS.FOLDER.ID_MAP); a source without labels is never checked as if it had."""
from __future__ import annotations

import json
import os

import pytest

from spcl.config import load_config
from spcl.data import build_dataset
from spcl.data import check as C
from spcl.data.check import DataError, dataset_for_check, default_cache_dir, fingerprint, list_key, preflight
from spcl.toy import generate_toy_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Cityscapes labelIds → train ids: the toy's folder_val labels are labelIds (0..33), out of range without it
CITYSCAPES_MAP = [[7, 0], [8, 1], [11, 2], [12, 3], [13, 4], [17, 5], [19, 6], [20, 7], [21, 8], [22, 9], [23, 10],
                  [24, 11], [25, 12], [26, 13], [27, 14], [28, 15], [31, 16], [32, 17], [33, 18]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_toy_dataset(root, seed=0, num_source=6, num_target_train=4, num_target_val=2, size=(64, 32))
    return str(root)


def cfg_for(root, out, *opts):
    return load_config(os.path.join(REPO, "configs", "toy.yaml"),
                       ["DATASETS.DATA_DIR", root, "DATASETS.TOY.GENERATE", "False", "OUTPUT_DIR", str(out), *opts])


def write_lines(path, lines):
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)
    return str(path)


def names(dataset):
    return [os.path.basename(image) for image, _ in dataset.items]


# ------------------------------------------------------------------ bug: lists chosen by dataset name
def test_source_and_test_of_one_name_each_read_their_own_list(root, tmp_path):
    src = write_lines(tmp_path / "src.txt", ["00001.png", "00002.png", "00003.png"])
    tst = write_lines(tmp_path / "tst.txt", ["00005.png", "00006.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train",
                  "DATASETS.TEST_LIST", tst)
    source_files, test_files = ["00001.png", "00002.png", "00003.png"], ["00005.png", "00006.png"]
    assert names(build_dataset(cfg, "gta5_train", train=True, role="source")) == source_files
    assert names(build_dataset(cfg, "gta5_train", train=False, role="source_eval")) == source_files  # prototypes
    assert names(build_dataset(cfg, "gta5_train", train=False)) == test_files  # the closing evaluation
    # the data check reads the same lists, and names the key of each
    assert names(dataset_for_check(cfg, "gta5_train", "source")) == source_files
    assert names(dataset_for_check(cfg, "gta5_train", "test")) == test_files
    assert list_key(cfg, "gta5_train", "source") == "DATASETS.SOURCE_LIST"
    assert list_key(cfg, "gta5_train", "test") == "DATASETS.TEST_LIST"


def test_a_test_role_without_a_list_leaves_the_source_list_in_force(root, tmp_path):
    src = write_lines(tmp_path / "src.txt", ["00002.png", "00004.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train")
    assert names(build_dataset(cfg, "gta5_train", train=True, role="source")) == ["00002.png", "00004.png"]
    assert len(build_dataset(cfg, "gta5_train", train=False)) == 6  # no TEST_LIST: every image is tested
    assert names(dataset_for_check(cfg, "gta5_train", "source")) == ["00002.png", "00004.png"]
    assert len(dataset_for_check(cfg, "gta5_train", "test")) == 6


def test_a_source_that_is_also_the_target_trains_on_the_source_list(root, tmp_path):
    first = "mockburg/mockburg_000000_000000_leftImg8bit.png"
    src = write_lines(tmp_path / "src.txt", [first])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE", "cityscapes_train", "DATASETS.SOURCE_LIST", src)
    assert cfg.DATASETS.TARGET == "cityscapes_train"
    source = build_dataset(cfg, "cityscapes_train", train=True, role="source")
    target = build_dataset(cfg, "cityscapes_train", train=True, role="target")
    assert names(source) == [os.path.basename(first)] and source.labels == "required"
    assert len(target) == 4 and target.labels == "none"
    assert names(dataset_for_check(cfg, "cityscapes_train", "source")) == [os.path.basename(first)]
    assert len(dataset_for_check(cfg, "cityscapes_train", "target")) == 4


def test_preflight_checks_each_role_of_one_name_with_its_own_list(root, tmp_path, count_reads):
    """A bad file only in the test list of a name that is also the source is found (it used to be checked
    with one list only); each role has its own cache file."""
    import shutil

    data = tmp_path / "copy"
    shutil.copytree(root, data)
    src = write_lines(tmp_path / "src.txt", ["00001.png", "00002.png"])
    tst = write_lines(tmp_path / "tst.txt", ["00005.png", "00006.png"])
    cfg = cfg_for(str(data), tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train",
                  "DATASETS.TEST_LIST", tst)
    cache = default_cache_dir(cfg)
    results = preflight(cfg, ["gta5_train", "cityscapes_train", "gta5_train"], cache, progress=False)
    assert {n: r.num_items for n, r in results.items()} == {"gta5_train": 2, "gta5_train (as test)": 2,
                                                           "cityscapes_train": 4}
    assert sorted(os.path.basename(p) for p in count_reads if "gta5" in p) == ["00001.png", "00002.png",
                                                                               "00005.png", "00006.png"]
    assert {f for f in os.listdir(cache)} == {"data_check_gta5_train.json", "data_check_gta5_train.test.json",
                                             "data_check_cityscapes_train.json"}
    count_reads.clear()
    preflight(cfg, ["gta5_train", "cityscapes_train"], cache, progress=False)
    assert count_reads == []  # both roles from their own cache files
    assert set(preflight(cfg, [("gta5_train", "test")], cache, progress=False)) == {"gta5_train (as test)"}

    os.remove(os.path.join(data, "gta5", "labels", "00006.png"))  # in the test list only
    with pytest.raises(DataError) as info:
        preflight(cfg, ["gta5_train"], cache, progress=False)
    msg = str(info.value)
    assert "gta5_train (as test): 1 bad file(s) in 1 of 2 items" in msg and "00006.png: missing label file" in msg
    assert "gta5_train: " not in msg  # the source list is fine


# ------------------------------------------------------------------ bug: cache blind to the id map
def folder_val_cfg(root, out, *opts):
    city = os.path.join(root, "cityscapes")
    return cfg_for(root, out, "DATASETS.TEST", "folder_val",
                   "DATASETS.FOLDER.VAL_DIR", os.path.join(city, "leftImg8bit", "val"),
                   "DATASETS.FOLDER.VAL_LABEL_DIR", os.path.join(city, "gtFine", "val"),
                   "DATASETS.FOLDER.IMAGE_SUFFIX", "_leftImg8bit.png",
                   "DATASETS.FOLDER.LABEL_SUFFIX", "_gtFine_labelIds.png", *opts)


def test_the_data_check_cache_is_keyed_by_the_folder_id_map(root, tmp_path, count_reads):
    out = tmp_path / "out"
    plain = folder_val_cfg(root, out)
    mapped = folder_val_cfg(root, out, "DATASETS.FOLDER.ID_MAP", json.dumps(CITYSCAPES_MAP))
    other = [[raw, (train + 1) % 19] for raw, train in CITYSCAPES_MAP]  # another table, also valid
    remapped = folder_val_cfg(root, out, "DATASETS.FOLDER.ID_MAP", json.dumps(other))
    cache = default_cache_dir(plain)

    with pytest.raises(DataError, match="label id out of range"):
        preflight(plain, ["folder_val"], cache, progress=False)  # labelIds read as train ids
    assert len(count_reads) == 2
    count_reads.clear()
    assert set(preflight(mapped, ["folder_val"], cache, progress=False)) == {"folder_val"}  # not the cached failure
    assert len(count_reads) == 2
    count_reads.clear()
    preflight(mapped, ["folder_val"], cache, progress=False)
    assert count_reads == []  # the same map: the cache is reused
    preflight(remapped, ["folder_val"], cache, progress=False)
    assert len(count_reads) == 2  # another map: checked again
    count_reads.clear()
    with pytest.raises(DataError, match="label id out of range"):
        preflight(plain, ["folder_val"], cache, progress=False)  # the map removed: not the cached pass
    assert len(count_reads) == 2


def test_an_id_map_file_changes_the_fingerprint_as_the_inline_map_does(root, tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({str(raw): train for raw, train in CITYSCAPES_MAP}))
    from_file = folder_val_cfg(root, tmp_path, "DATASETS.FOLDER.ID_MAP_FILE", str(path))
    inline = folder_val_cfg(root, tmp_path, "DATASETS.FOLDER.ID_MAP", json.dumps(CITYSCAPES_MAP))
    key = fingerprint(dataset_for_check(from_file, "folder_val"), "folder_val")
    assert key == fingerprint(dataset_for_check(inline, "folder_val"), "folder_val")  # the same table
    assert key != fingerprint(dataset_for_check(folder_val_cfg(root, tmp_path), "folder_val"), "folder_val")
    path.write_text(json.dumps({"7": 1, "8": 0}))
    assert key != fingerprint(dataset_for_check(from_file, "folder_val"), "folder_val")


# ------------------------------------------------------------------ bug: an unlabelled source
def test_an_unlabelled_source_is_built_and_checked_with_labels_required(root, tmp_path):
    train_dir = os.path.join(root, "cityscapes", "leftImg8bit", "train")
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE", "folder_train", "DATASETS.FOLDER.TRAIN_DIR", train_dir)
    assert build_dataset(cfg, "folder_train", train=True, role="source").labels == "required"
    assert build_dataset(cfg, "folder_train", train=False, role="source_eval").labels == "required"
    dataset = dataset_for_check(cfg, "folder_train", "source")
    assert dataset.labels == "required" and all(label is None for _, label in dataset.items)
    n, bad = C.check_item(dataset, *dataset.items[0])  # a required label that is not there is a bad item
    assert n == 1 and bad == [(dataset.items[0][0], "no label file for this image, and labels are required here")]
    with pytest.raises(DataError, match=r"^DATASETS.SOURCE folder_train has no labels \(folder_train is read "
                                        r"without labels: DATASETS.FOLDER.TRAIN_DIR gives images only\)"):
        preflight(cfg, ["folder_train"], default_cache_dir(cfg), progress=False)
    # the same folder as the unlabelled target is fine: its labels are optional
    target = cfg_for(root, tmp_path / "out", "DATASETS.TARGET", "folder_train", "DATASETS.FOLDER.TRAIN_DIR", train_dir)
    assert set(preflight(target, ["folder_train"], default_cache_dir(target), progress=False)) == {"folder_train"}


def test_a_test_set_without_labels_is_checked_without_labels(root, tmp_path):
    """folder_val without VAL_LABEL_DIR as the test set: images only (its labels used to be skipped as
    'required' items without a label path; they are none, as build_dataset reads them)."""
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.TEST", "folder_val",
                  "DATASETS.FOLDER.VAL_DIR", os.path.join(root, "cityscapes", "leftImg8bit", "val"))
    assert dataset_for_check(cfg, "folder_val").labels == "none"
    assert preflight(cfg, ["folder_val"], default_cache_dir(cfg), progress=False)["folder_val"].ok


def test_check_inputs_reads_each_role_of_one_name_with_its_list(root, tmp_path):
    """tools/train.py --check / check_run: a missing TEST_LIST of a test set that is also the source is found
    before the run (the test read used to be checked with the source's list)."""
    from spcl.engine.pipeline import check_inputs

    src = write_lines(tmp_path / "src.txt", ["00001.png"])
    cfg = cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train",
                  "DATASETS.TEST_LIST", str(tmp_path / "nowhere.txt"))
    with pytest.raises(FileNotFoundError, match=r"1 input\(s\) of this run are missing:\n  - gta5_train: .*nowhere"):
        check_inputs(cfg)
    check_inputs(cfg_for(root, tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train"))
