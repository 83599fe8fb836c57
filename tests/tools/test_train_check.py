"""`tools/train.py --check`: the checks a run makes before it writes anything (config keys and values, every
input present, a rerun's config against the run folder's), without running it and without writing."""
import os

import pytest

from conftest import load_tool, restored_spcl_logger
from spcl.config import ConfigDriftError

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "toy.yaml")


@pytest.fixture
def train():
    with restored_spcl_logger():
        yield load_tool("train")


def _tiny_opts(toy_root, out):
    """The toy config on the tiny generated dataset, into `out`."""
    return ["OUTPUT_DIR", out, "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False"]


def test_check_passes_a_runnable_config_and_writes_nothing(train, toy_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main(["--check", "--config", TOY] + _tiny_opts(toy_root, out)) == 0
    assert "toy.yaml: config and inputs OK (stages adv_warmup → prototypes" in capsys.readouterr().out
    assert not os.path.exists(out)
    assert train.main(["--check", "--stage", "align", "--config", TOY]
                      + _tiny_opts(toy_root, out)) == 0
    assert "(stage align;" in capsys.readouterr().out and not os.path.exists(out)


def test_check_lists_every_missing_input_and_a_changed_config(train, toy_root, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"4 input\(s\) of this run are missing") as err:
        train.main(["--check", "--config", TOY, "OUTPUT_DIR", out, "DATASETS.TOY.GENERATE", "False",
                    "DATASETS.DATA_DIR", str(tmp_path / "no_data"), "MODEL.WEIGHTS", str(tmp_path / "w.pth")])
    assert all(k in str(err.value) for k in ("w.pth", "gta5_train", "cityscapes_train", "cityscapes_val"))
    assert not os.path.exists(out)
    # a run folder made with this config: the same command passes, SEED 3 is named as the one change
    from spcl.config import load_config

    opts = ["--config", TOY] + _tiny_opts(toy_root, out)
    os.makedirs(out)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(load_config(TOY, opts[2:]).dump())
    assert train.main(["--check"] + opts) == 0
    with pytest.raises(ConfigDriftError, match=r"1 key\(s\) differ:\n  SEED: 0 then, 3 now"):
        train.main(["--check"] + opts + ["SEED", "3"])
    assert os.listdir(out) == ["config.yaml"]


def test_check_names_a_run_writing_into_the_folder_now(train, toy_root, tmp_path):
    """The login-node case: the job is already running there (it holds OUTPUT_DIR/.lock)."""
    from spcl.utils.run_lock import LOCK, RunInUse, run_lock

    out = str(tmp_path / "run")
    opts = ["--check", "--config", TOY] + _tiny_opts(toy_root, out)
    with run_lock(out):
        for stage in ([], ["--stage", "align"]):
            with pytest.raises(RunInUse, match=rf"OUTPUT_DIR {out} is in use by another run \(pid {os.getpid()} on "):
                train.main(stage + opts)
    assert train.main(opts) == 0  # a lock file left by a run that ended holds nothing
    assert os.listdir(out) == [LOCK]
