"""A file where an output folder (or a parent of it) should be is named, with what gave the folder, by every
writer that makes folders: the run lock (OUTPUT_DIR, test.py and infer.py --output), atomic writes
(checkpoints, indexes, JSON records) and the toy writer. os.makedirs said only "[Errno 17] File exists: 'F'"
or "[Errno 20] Not a directory: 'F/sub'"."""
import os

import pytest

from conftest import run_tool
from spcl.toy import generate_toy_dataset
from spcl.utils.io import atomic_write, folder_blocked, make_folder
from spcl.utils.run_lock import run_lock

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "toy.yaml")


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "results"
    path.write_text("keep me")
    return str(path)


def test_folder_blocked_names_the_file_at_the_folder_or_above_it(tmp_path, afile):
    assert folder_blocked(str(tmp_path), "X") == ""                        # a folder
    assert folder_blocked(str(tmp_path / "new" / "deeper"), "X") == ""     # can be made
    assert folder_blocked(afile, "--output") == f"--output {afile} is a file, not a folder: give a folder for the outputs"
    inner = os.path.join(afile, "a", "b")
    assert folder_blocked(inner, "OUTPUT_DIR") == (f"OUTPUT_DIR {inner} lies under {afile}, which is a file, not a "
                                                   "folder: give a folder for the outputs")


def test_make_folder_makes_parents_or_raises_naming_the_file(tmp_path, afile):
    make_folder(str(tmp_path / "a" / "b"), "X")
    assert os.path.isdir(tmp_path / "a" / "b")
    make_folder(str(tmp_path / "a" / "b"), "X")  # already there
    with pytest.raises(NotADirectoryError, match=f"^X {afile}/sub lies under {afile}, which is a file"):
        make_folder(os.path.join(afile, "sub"), "X")
    assert open(afile).read() == "keep me"



def test_a_folder_that_cannot_be_written_is_named_before_anything_is_made(tmp_path, monkeypatch):
    """Without write and search permission on the nearest existing folder nothing can be made in it. (Tests run
    as root, which os.access never refuses: the permission is simulated; a folder writable but not searchable
    is refused too.)"""
    import spcl.utils.io as io_mod

    monkeypatch.setattr(io_mod.os, "access", lambda path, mode: not mode & os.X_OK)
    folder = str(tmp_path / "a" / "b")
    with pytest.raises(PermissionError) as raised:
        make_folder(folder, "X")
    assert raised.value.strerror == (f"X {folder} cannot be written: {tmp_path} is read-only to this user (no "
                                     "permission, or a read-only file system); give a folder you can write to")
    assert os.listdir(tmp_path) == []


def test_a_folder_the_disk_has_no_room_for_says_so(tmp_path, monkeypatch):
    import errno

    def makedirs(path, exist_ok=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "makedirs", makedirs)
    folder = str(tmp_path / "a")
    with pytest.raises(OSError) as raised:
        make_folder(folder, "X")
    assert raised.value.strerror == (f"X {folder} cannot be made (No space left on device) (disk full or quota "
                                     "reached?): give a folder you can write to")
    assert raised.value.errno == errno.ENOSPC


def test_atomic_write_under_a_file_names_the_target_and_the_file(afile):
    target = os.path.join(afile, "index.json")
    with pytest.raises(NotADirectoryError, match=f"^cannot write class index {target}: its folder {afile} is a "
                                                 "file, not a folder"):
        atomic_write(target, lambda f: f.write("{}"), binary=False, what="class index")
    assert open(afile).read() == "keep me"


def test_atomic_write_onto_a_folder_says_so_before_writing(tmp_path):
    (tmp_path / "out").mkdir()
    called = []
    with pytest.raises(IsADirectoryError, match=f"^cannot write checkpoint {tmp_path / 'out'}: it is a folder; give "
                                                "the path of a file$"):
        atomic_write(str(tmp_path / "out"), called.append, what="checkpoint")
    assert called == [] and os.listdir(tmp_path / "out") == [] and os.listdir(tmp_path) == ["out"]


def test_run_lock_on_a_file_names_the_flag(afile):
    with pytest.raises(NotADirectoryError, match=f"^--output {afile} is a file, not a folder"):
        with run_lock(afile, "--output"):
            pass


def test_toy_writer_under_a_file(afile):
    with pytest.raises(NotADirectoryError, match=f"^toy dataset folder {afile}/toy lies under {afile}"):
        generate_toy_dataset(os.path.join(afile, "toy"), num_source=1, num_target_train=1, num_target_val=1)


@pytest.mark.parametrize("tool, args, flag", [
    ("test.py", ["--config", TOY, "--checkpoint", "{ckpt}", "--output", "{out}"], "--output"),
    ("infer.py", ["--config", TOY, "--checkpoint", "{ckpt}", "--input", "{img}", "--output", "{out}"], "--output"),
    ("convert_checkpoint.py", ["{ckpt}", "{out}/model.pth"], "cannot write"),
    ("check_data.py", ["--config", TOY, "--output", "{out}", "DATASETS.TOY.GENERATE", "False"], "--output"),
])
def test_tools_say_it_in_one_line(tmp_path, afile, tool, args, flag):
    """test.py and infer.py take their --output through the run lock, convert_checkpoint.py writes through
    atomic_write, check_data.py makes its --output with make_folder; before, each said "[Errno 17] File exists" or "[Errno 20] Not a directory"."""
    import numpy as np
    import torch
    from PIL import Image

    from spcl.config import load_config
    from spcl.modeling import build_segmentor

    cfg = load_config(TOY, ["MODEL.BACKBONE", "resnet18"])
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": build_segmentor(cfg, load_weights=False).state_dict()}, ckpt)
    img = str(tmp_path / "x.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(img)
    out = os.path.join(afile, "sub")
    proc = run_tool(tool, *[a.format(ckpt=ckpt, out=out, img=img) for a in args])
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-2]
    assert flag in line and f"lies under {afile}, which is a file, not a folder" in line, line
    assert "Errno" not in proc.stderr and open(afile).read() == "keep me"


@pytest.mark.parametrize("stage", ["source_only", "prototypes"])
def test_a_stage_run_on_a_file_names_its_stage_folder(toy_root, tmp_path, afile, stage):
    """Past the run's own checks (a stage run from Python, or a file made while the run went on), the stage's
    making of its folder names it; os.makedirs said "[Errno 17] File exists"."""
    import torch

    from conftest import tiny_cfg
    from spcl.engine.stages import STAGES, SourceOnlyTrainer

    weights = tmp_path / "model.pth"
    torch.save({"model": SourceOnlyTrainer(tiny_cfg(toy_root, str(tmp_path / "x")), None, torch.device("cpu"))
                .model_without_ddp.state_dict()}, weights)
    cfg = tiny_cfg(toy_root, str(afile), "MODEL.WEIGHTS", str(weights) if stage == "prototypes" else "")
    runner = STAGES[stage](cfg, str(afile), torch.device("cpu"))
    with pytest.raises(NotADirectoryError, match=rf"^stage folder {afile} is a file, not a folder"):
        runner.run()
    with open(afile) as f:
        assert f.read() == "keep me"
