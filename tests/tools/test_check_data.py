"""tools/check_data.py: broken files are named with their reason in bad_files.txt and the tool exits
1; the clean list excludes exactly them and works as DATASETS.SOURCE_LIST; clean data exits 0; a
missing dataset folder is one line, not a traceback."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool, restored_spcl_logger, run_tool
from spcl.config import load_config
from spcl.data import build_dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from test_check import break_gta5, make_root  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "toy.yaml")


@pytest.fixture
def tool():
    """tools/check_data.py as a module; the `spcl` logger is restored afterwards."""
    with restored_spcl_logger():
        yield load_tool("check_data")


def opts(root, out, *extra):
    return ["DATASETS.DATA_DIR", str(root), "DATASETS.TOY.GENERATE", "False", "OUTPUT_DIR", str(out), *extra]


def read_lines(path):
    with open(path) as f:
        return [ln.rstrip("\n") for ln in f]


def test_broken_files_named_exit_1_and_clean_list_loads(tmp_path, tool, capsys):
    root = make_root(tmp_path)
    expected = break_gta5(root)
    out = tmp_path / "out"
    rc = tool.main(["--config", CONFIG, *opts(root, out)])
    assert rc == 1
    check_dir = out / "check_data"
    bad = read_lines(check_dir / "bad_files.txt")
    assert len(bad) == 4
    for path, reason in expected.items():
        assert sum(line.startswith(f"{path}: {reason}") for line in bad) == 1, (path, bad)
    printed = capsys.readouterr().out
    assert "gta5_train" in printed and "DATASETS.SOURCE_LIST" in printed
    row = next(ln for ln in printed.splitlines() if ln.startswith("gta5_train"))
    assert row.split() == ["gta5_train", "6", "12", "4", "1"]

    clean = read_lines(check_dir / "clean_gta5_train.txt")
    assert clean == ["00005.png", "00006.png"]  # exactly the four broken items left out
    assert len(read_lines(check_dir / "clean_cityscapes_train.txt")) == 4
    assert len(read_lines(check_dir / "clean_cityscapes_val.txt")) == 2
    cfg = load_config(CONFIG, opts(root, out, "DATASETS.SOURCE_LIST", str(check_dir / "clean_gta5_train.txt")))
    ds = build_dataset(cfg, "gta5_train", train=True)
    assert len(ds) == 2

    # the same config with the clean list passes
    rc = tool.main(["--config", CONFIG, "--output", str(tmp_path / "again"),
                    *opts(root, out, "DATASETS.SOURCE_LIST", str(check_dir / "clean_gta5_train.txt"))])
    assert rc == 0
    assert read_lines(tmp_path / "again" / "bad_files.txt") == []


def test_clean_dataset_exits_0(tmp_path, tool, capsys):
    root = make_root(tmp_path)
    rc = tool.main(["--config", CONFIG, "--output", str(tmp_path / "chk"), *opts(root, tmp_path / "out")])
    assert rc == 0
    assert read_lines(tmp_path / "chk" / "bad_files.txt") == []
    assert len(read_lines(tmp_path / "chk" / "clean_gta5_train.txt")) == 6
    printed = capsys.readouterr().out
    assert "warning: gta5_train has 6 items; the full dataset has 24,966" in printed  # warnings do not fail


def test_missing_folder_is_one_line_not_a_traceback(tmp_path, tool, capsys):
    root = make_root(tmp_path)
    rc = tool.main(["--config", CONFIG, *opts(tmp_path / "nowhere", tmp_path / "out",
                                                "DATASETS.PSEUDO_DIR", str(tmp_path / "no_pseudo"))])
    assert rc == 1
    bad = read_lines(tmp_path / "out" / "check_data" / "bad_files.txt")
    assert [ln.split(":")[0] for ln in bad] == ["gta5_train", "cityscapes_train", "cityscapes_val",
                                                 "cityscapes_pseudo"]
    assert "dataset folder not found" in bad[0] and "pseudo-label folder not found" in bad[3]
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    del root


def test_pseudo_dir_is_checked_when_set(tmp_path, tool):
    root = make_root(tmp_path)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()  # empty: every pseudo label is missing
    rc = tool.main(["--config", CONFIG, *opts(root, tmp_path / "out", "DATASETS.PSEUDO_DIR", str(pseudo))])
    assert rc == 1
    bad = read_lines(tmp_path / "out" / "check_data" / "bad_files.txt")
    assert len(bad) == 4 and all(ln.startswith(str(pseudo)) and ln.endswith(": missing label file") for ln in bad)
    assert read_lines(tmp_path / "out" / "check_data" / "clean_cityscapes_pseudo.txt") == []


def test_process_exit_code(tmp_path):
    root = make_root(tmp_path)
    os.remove(os.path.join(root, "gta5", "labels", "00002.png"))
    proc = run_tool("check_data.py", "--config", CONFIG, *opts(root, tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "00002.png: missing label file" in proc.stdout


def write_list_file(path, entries):
    with open(path, "w") as f:
        f.writelines(e + "\n" for e in entries)
    return str(path)


def test_the_datasets_to_check_are_each_named_once_in_the_order_of_their_roles(tool):
    """datasets_to_check: source, target, test, then cityscapes_pseudo when DATASETS.PSEUDO_DIR is set; a name in two
    roles once (its roles are units_to_check's)."""
    cfg = load_config("", ["DATASETS.TEST", "cityscapes_train", "DATASETS.PSEUDO_DIR", "labels"])
    assert tool.datasets_to_check(cfg) == ["gta5_train", "cityscapes_train", "cityscapes_pseudo"]
    assert tool.datasets_to_check(load_config("", [])) == ["gta5_train", "cityscapes_train", "cityscapes_val"]


def test_a_dataset_in_two_roles_is_checked_with_each_roles_list(tmp_path, tool, capsys):
    """gta5_train as DATASETS.SOURCE (SOURCE_LIST 00001-00003, all good) and as DATASETS.TEST (TEST_LIST 00004-00006,
    00005's image truncated, 00006's label missing): both lists are checked, the test list's bad files are named,
    its clean list is clean_gta5_train.test.txt for DATASETS.TEST_LIST; the source's clean list is all three."""
    root = make_root(tmp_path)
    g = os.path.join(root, "gta5")
    image5, label6 = os.path.join(g, "images", "00005.png"), os.path.join(g, "labels", "00006.png")
    data = open(image5, "rb").read()
    with open(image5, "wb") as f:
        f.write(data[: len(data) // 2])
    os.remove(label6)
    src = write_list_file(tmp_path / "src.txt", ["00001.png", "00002.png", "00003.png"])
    tst = write_list_file(tmp_path / "tst.txt", ["00004.png", "00005.png", "00006.png"])
    out = tmp_path / "out"
    rc = tool.main(["--config", CONFIG, *opts(root, out, "DATASETS.SOURCE_LIST", src, "DATASETS.TEST", "gta5_train",
                                              "DATASETS.TEST_LIST", tst)])
    assert rc == 1
    check_dir = out / "check_data"
    bad = read_lines(check_dir / "bad_files.txt")
    assert [line.split(": ")[0] for line in bad] == [image5, label6]
    assert bad[0].startswith(f"{image5}: unreadable or truncated image") and bad[1] == f"{label6}: missing label file"
    assert read_lines(check_dir / "clean_gta5_train.txt") == ["00001.png", "00002.png", "00003.png"]
    assert read_lines(check_dir / "clean_gta5_train.test.txt") == ["00004.png"]
    printed = capsys.readouterr().out
    rows = {ln.split("  ")[0]: ln.split()[-4:] for ln in printed.splitlines() if ln.startswith("gta5_train")}
    assert rows == {"gta5_train": ["3", "6", "0", "0"], "gta5_train (as test)": ["3", "6", "2", "0"]}
    assert (f"clean list of gta5_train (as test) (1 of 3 items): use DATASETS.TEST_LIST "
            f"{check_dir / 'clean_gta5_train.test.txt'}") in printed


def test_a_second_roles_missing_list_file_is_reported(tmp_path, tool):
    """The image folder as DATASETS.TARGET (the whole folder) and as DATASETS.TEST with a TEST_LIST that does not
    exist: the missing list is named under `folder_train (as test)`, the target's clean list holds every image."""
    root = make_root(tmp_path)
    images = os.path.join(root, "gta5", "images")
    missing = str(tmp_path / "no_such_list.txt")
    out = tmp_path / "out"
    rc = tool.main(["--config", CONFIG, *opts(root, out, "DATASETS.TARGET", "folder_train",
                                              "DATASETS.FOLDER.TRAIN_DIR", images, "DATASETS.TEST", "folder_train",
                                              "DATASETS.TEST_LIST", missing)])
    assert rc == 1
    bad = read_lines(out / "check_data" / "bad_files.txt")
    assert len(bad) == 1 and bad[0].startswith(f"folder_train (as test): list file not found: {missing}")
    assert len(read_lines(out / "check_data" / "clean_folder_train.txt")) == 6


def test_a_file_bad_in_two_roles_lists_is_one_line(tmp_path, tool):
    """Both roles' lists hold the truncated 00002.png: bad_files.txt names it once."""
    root = make_root(tmp_path)
    image2 = os.path.join(root, "gta5", "images", "00002.png")
    data = open(image2, "rb").read()
    with open(image2, "wb") as f:
        f.write(data[: len(data) // 2])
    src = write_list_file(tmp_path / "src.txt", ["00001.png", "00002.png"])
    tst = write_list_file(tmp_path / "tst.txt", ["00002.png", "00003.png"])
    rc = tool.main(["--config", CONFIG, *opts(root, tmp_path / "out", "DATASETS.SOURCE_LIST", src, "DATASETS.TEST",
                                              "gta5_train", "DATASETS.TEST_LIST", tst)])
    assert rc == 1
    bad = read_lines(tmp_path / "out" / "check_data" / "bad_files.txt")
    assert len(bad) == 1 and bad[0].startswith(f"{image2}: unreadable or truncated image")


def test_an_id_map_that_maps_none_of_the_label_values_is_reported(tmp_path, tool, capsys):
    """folder_val (Cityscapes labelIds) as the test set with ID_MAP [[100, 0]]: exit 1, one line in bad_files.txt
    naming DATASETS.FOLDER.ID_MAP, the values seen and the map's keys; the table counts it; every file is clean."""
    root = make_root(tmp_path)
    city = os.path.join(root, "cityscapes")
    out = tmp_path / "out"
    rc = tool.main(["--config", CONFIG, *opts(root, out, "DATASETS.TEST", "folder_val",
                                              "DATASETS.FOLDER.VAL_DIR", os.path.join(city, "leftImg8bit", "val"),
                                              "DATASETS.FOLDER.VAL_LABEL_DIR", os.path.join(city, "gtFine", "val"),
                                              "DATASETS.FOLDER.IMAGE_SUFFIX", "_leftImg8bit.png",
                                              "DATASETS.FOLDER.LABEL_SUFFIX", "_gtFine_labelIds.png",
                                              "DATASETS.FOLDER.ID_MAP", "[[100, 0]]")])
    assert rc == 1
    bad = read_lines(out / "check_data" / "bad_files.txt")
    assert len(bad) == 1 and bad[0].startswith("folder_val: DATASETS.FOLDER.ID_MAP (or ID_MAP_FILE) maps none of the "
                                               "label values it saw to a class")
    first = os.path.join(city, "gtFine", "val", "valville", "valville_000000_000000_gtFine_labelIds.png")
    seen = ", ".join(str(v) for v in sorted(np.unique(np.array(Image.open(first))).tolist())[:8])
    assert f"values seen [{seen}, …]" in bad[0] and f"(e.g. in {first})" in bad[0] and "are [100]" in bad[0]
    printed = capsys.readouterr().out
    assert next(ln for ln in printed.splitlines() if ln.startswith("folder_val")).split() == \
        ["folder_val", "2", "4", "1", "0"]
    assert "clean list of folder_val" not in printed
    assert len(read_lines(out / "check_data" / "clean_folder_val.txt")) == 2
