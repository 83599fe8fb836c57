"""A run folder copied or moved elsewhere (only OUTPUT_DIR and the hand-off paths inside it differ) keeps its
config record: a rerun writes no `config_<time>.yaml`, only the rerun note in env.txt, which names the old
place. A real change, allowed, is still recorded beside the original."""
import glob
import os
import shutil

import pytest

from conftest import tiny_cfg
from spcl.config import get_cfg
from spcl.engine import run_pipeline
from spcl.utils.env import moved_from, write_run_info

pytestmark = pytest.mark.usefixtures("on_the_cpu")

TWO_STAGES = ("SOURCE_ONLY.STOP_ITER", "2", "PIPELINE.STAGES", "['source_only', 'prototypes']")


def _cfg(root, **keys):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = root
    cfg.MODEL.WEIGHTS = os.path.join(root, "0_a", "checkpoints", "model_final.pth")
    cfg.PROTOTYPE.PATH = os.path.join(root, "1_b", "prototypes.pth")
    for key, value in keys.items():
        node, name = key.split("__")
        cfg[node][name] = value
    return cfg


def _records(folder):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "**", "config*.yaml"), recursive=True))


def test_moved_from_tells_a_moved_folder_from_a_changed_config():
    cfg = _cfg("/old/run")
    text = cfg.dump()
    assert moved_from(text, cfg) == ""
    assert moved_from(text, _cfg("/new/place/run")) == "/old/run"  # the same config, elsewhere
    other = _cfg("/new/place/run", MODEL__WEIGHTS="/new/place/run/0_a/checkpoints/model_0000002.pth")
    assert moved_from(text, other) is None  # another file of the run folder
    outside = _cfg("/old/run", MODEL__WEIGHTS="/weights/resnet.pth")
    assert moved_from(outside.dump(), _cfg("/new/run", MODEL__WEIGHTS="/weights/resnet.pth")) == "/old/run"
    assert moved_from(text, _cfg("/old/run", SOLVER__LOG_PERIOD=7)) is None  # a key a rerun may change: recorded
    assert moved_from(text, _cfg("/new/run", SOLVER__BASE_LR=0.5)) is None
    assert moved_from("[1, 2]\n", cfg) is None and moved_from("a: [\n", cfg) is None


def test_a_moved_folder_keeps_its_record_and_a_change_is_written_once(tmp_path):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    write_run_info(_cfg(old), old)
    shutil.copytree(old, new)
    for made in (True, False):
        assert write_run_info(_cfg(new), new, made=made) == os.path.join(new, "config.yaml")
    assert _records(new) == ["config.yaml"]
    env = open(os.path.join(new, "env.txt")).read()
    assert env.count("--- rerun at") == 2 and env.count(f", in this folder moved or copied from {old} ---") == 2
    changed = _cfg(new, SOLVER__LOG_PERIOD=7)
    written = write_run_info(changed, new)
    assert os.path.basename(written).startswith("config_") and open(written).read() == changed.dump()
    earlier = os.path.join(new, "config_20000101-000000.yaml")  # as if written at an earlier rerun
    os.replace(written, earlier)
    os.utime(earlier, (os.path.getmtime(earlier) + 5,) * 2)  # still newer than config.yaml
    assert write_run_info(changed, new) == earlier  # the same changed config again: matched, not written again
    assert len(_records(new)) == 2


@pytest.fixture(scope="module")
def finished_run(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("finished") / "run")
    run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES))
    return out


def test_a_copied_run_folder_reruns_without_new_config_files(finished_run, toy_root, tmp_path):
    """The copy's rerun resumes source_only (its manifest removed) and runs prototypes again: no stage folder
    and not the run folder gains a config file."""
    out = str(tmp_path / "copy")
    shutil.copytree(finished_run, out)
    os.remove(os.path.join(out, "0_source_only", "manifest.json"))
    run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES))
    assert "resumed from" in open(os.path.join(out, "0_source_only", "log.txt")).read()
    assert _records(out) == ["config.yaml"] * 4  # run folder, source_only, prototypes and the one set aside
    for folder in (out, os.path.join(out, "0_source_only")):
        env = open(os.path.join(folder, "env.txt")).read()
        assert f", in this folder moved or copied from {finished_run} ---" in env


def test_a_real_change_in_a_copied_run_folder_is_still_recorded(finished_run, toy_root, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(finished_run, out)
    run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES, "SOURCE_ONLY.BASE_LR", "0.5", "PIPELINE.ALLOW_CONFIG_CHANGE",
                          "True"))
    new = [f for f in os.listdir(out) if f.startswith("config_")]
    assert len(new) == 1 and "BASE_LR: 0.5" in open(os.path.join(out, new[0])).read()
    assert f", with the config of {new[0]} ---" in open(os.path.join(out, "env.txt")).read()
