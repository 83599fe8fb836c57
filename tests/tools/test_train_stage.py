"""`tools/train.py --stage NAME`: one stage into OUTPUT_DIR/NAME, its summary printed with the stage's wall
time, and a rerun that skips the finished stage and prints the time it recorded."""
import json
import os

import pytest

from conftest import load_tool, restored_spcl_logger, tiny_opts

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "toy.yaml")


@pytest.fixture
def train():
    with restored_spcl_logger():
        yield load_tool("train")


def test_a_stage_prints_its_result_and_wall_time_and_a_rerun_the_recorded_one(train, toy_root, tmp_path, capsys):
    from spcl.engine.pipeline import duration

    out = str(tmp_path / "run")
    args = ["--config", TOY, "--stage", "source_only"] + tiny_opts(toy_root, out)
    assert train.main(args) == 0
    seconds = json.load(open(os.path.join(out, "source_only", "manifest.json")))["seconds"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("source_only    target mIoU")
    assert lines[-1] == f"wall time: source_only {duration(seconds)} ({duration(seconds)} in all)"
    assert train.main(args) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert again[-3].startswith("stage source_only already finished in") and again[-2:] == lines[-2:]
