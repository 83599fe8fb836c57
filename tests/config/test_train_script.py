"""scripts/train.sh, run with a stub `torchrun` first on PATH that prints its arguments: the config
path and the KEY VALUE pairs reach tools/train.py unchanged, NUM_GPUS becomes --nproc_per_node, and
bad calls stop before torchrun."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from spcl.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "train.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def stub_path(tmp_path):
    """A PATH whose first `torchrun` writes each argument followed by a NUL byte to stdout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "torchrun"
    stub.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done\n")
    stub.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def run(args, path, cwd=REPO, **env):
    base = {k: v for k, v in os.environ.items() if k != "MAX_RESTARTS"}
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=cwd, env={**base, "PATH": path, **env},
                          capture_output=True, timeout=60)
    argv = proc.stdout.decode().split("\0")[:-1] if proc.stdout else []
    return proc.returncode, argv, proc.stderr.decode()


OVERRIDES = ["SOLVER.AMP", "bf16", "PIPELINE.STAGES", "['adv_warmup', 'align']", "OUTPUT_DIR", "out dir/a b",
             "DATASETS.SOURCE_LIST", "", "LOSS.CONTRAST.WEIGHT", "0.5"]


def test_config_and_overrides_pass_through_unchanged(stub_path):
    config = "configs/ablations/gta5_r101_alpha_0.5.yaml"
    rc, argv, err = run([config, "4", *OVERRIDES], stub_path)
    assert rc == 0, err
    assert argv == ["--standalone", "--nproc_per_node=4", os.path.join(REPO, "tools", "train.py"),
                    "--config", config, *OVERRIDES]
    assert os.path.isfile(argv[2])
    # what tools/train.py receives is a valid run: the file's value and each override arrive intact
    cfg = load_config(os.path.join(REPO, argv[4]), argv[5:])
    assert cfg.PROTOTYPE.ALPHA == 0.5 and cfg.SOLVER.AMP == "bf16" and cfg.LOSS.CONTRAST.WEIGHT == 0.5
    assert cfg.PIPELINE.STAGES == ["adv_warmup", "align"] and cfg.OUTPUT_DIR == "out dir/a b"


def test_num_gpus_defaults_to_one(stub_path):
    rc, argv, err = run(["configs/toy.yaml", "SEED", "3"], stub_path)
    assert rc == 0, err
    assert argv[:2] == ["--standalone", "--nproc_per_node=1"]
    assert argv[3:] == ["--config", "configs/toy.yaml", "SEED", "3"]
    rc, argv, err = run(["configs/toy.yaml"], stub_path)
    assert rc == 0, err
    assert argv[1] == "--nproc_per_node=1" and argv[3:] == ["--config", "configs/toy.yaml"]


def test_runs_from_another_directory(stub_path, tmp_path):
    config = os.path.join(REPO, "configs", "gta5_r101.yaml")
    rc, argv, err = run([config, "2"], stub_path, cwd=str(tmp_path))
    assert rc == 0, err
    assert argv == ["--standalone", "--nproc_per_node=2", os.path.join(REPO, "tools", "train.py"),
                    "--config", config]


@pytest.mark.parametrize("args,message", [
    ([], "usage"),
    (["configs/nope.yaml", "1"], "config file not found: configs/nope.yaml"),
    (["configs/toy.yaml", "2", "SEED"], "KEY VALUE pairs"),
    (["configs/toy.yaml", "0"], "at least 1"),
])
def test_bad_calls_stop_before_torchrun(stub_path, args, message):
    rc, argv, err = run(args, stub_path)
    assert rc == 2
    assert argv == []  # torchrun never ran
    assert message in err


def test_max_restarts_reaches_torchrun_as_its_own_option(stub_path):
    """What the launcher passes is parsed by torchrun's own parser: N restarts, the script and its
    arguments unchanged."""
    from torch.distributed.run import get_args_parser

    rc, argv, err = run(["configs/toy.yaml", "2", "SEED", "3"], stub_path, MAX_RESTARTS="3")
    assert rc == 0, err
    args = get_args_parser().parse_args(argv)
    assert args.max_restarts == 3 and args.nproc_per_node == "2" and args.standalone
    assert args.training_script == os.path.join(REPO, "tools", "train.py")
    assert args.training_script_args == ["--config", "configs/toy.yaml", "SEED", "3"]
    for unset in ({}, {"MAX_RESTARTS": ""}):  # unset or empty: torchrun's default (no restart)
        rc, argv, err = run(["configs/toy.yaml"], stub_path, **unset)
        assert rc == 0, err
        assert get_args_parser().parse_args(argv).max_restarts == 0 and not any("restarts" in a for a in argv)


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_max_restarts_that_is_not_a_count_stops_before_torchrun(stub_path, value):
    rc, argv, err = run(["configs/toy.yaml"], stub_path, MAX_RESTARTS=value)
    assert rc == 2 and argv == []
    assert f"MAX_RESTARTS must be a whole number of restarts (0, 1, ...), got '{value}'" in err
