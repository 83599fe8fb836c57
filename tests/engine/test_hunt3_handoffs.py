"""A finished stage's hand-off (its manifest's outputs: a checkpoint, prototypes.pth, the pseudo-label folder)
deleted or cut short by hand, while a stage that reads it is still to run: the rerun stops before writing
anything, with one line naming the file, the stage that made it and the way out; nothing is deleted."""
import hashlib
import os
import shutil

import pytest

from conftest import tiny_cfg
from spcl.engine import run_pipeline
from spcl.engine.pipeline import check_run

pytestmark = pytest.mark.usefixtures("on_the_cpu")

STAGES = ("SOURCE_ONLY.STOP_ITER", "2", "ALIGN.STOP_ITER", "2", "SELF_TRAIN.STOP_ITER", "2",
          "PIPELINE.STAGES", "['source_only', 'prototypes', 'pseudo_labels', 'align', 'self_train']")


@pytest.fixture(scope="module")
def finished_run(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("handoffs") / "run")
    run_pipeline(tiny_cfg(toy_root, out, *STAGES))
    return out


def _snapshot(root):
    """Every file under `root` with its size and content hash (the run lock's file aside)."""
    seen = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            seen[os.path.relpath(path, root)] = hashlib.md5(open(path, "rb").read()).hexdigest()
    return seen


def _damage(path, how):
    if how == "deleted":
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    else:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])


@pytest.mark.parametrize("damaged, how, rerun, maker, reader, says", [
    # prototypes (offline) runs again and reads source_only's checkpoint
    ("0_source_only/checkpoints/model_final.pth", "deleted", "1_prototypes/manifest.json", "source_only",
     "prototypes", "is missing"),
    ("0_source_only/checkpoints/model_final.pth", "truncated", "1_prototypes/manifest.json", "source_only",
     "prototypes", "is unreadable (RuntimeError: PytorchStreamReader failed reading zip archive"),
    # align starts anew (its folder deleted): it reads the prototypes
    ("1_prototypes/prototypes.pth", "truncated", "3_align", "prototypes", "align", "is unreadable ("),
    ("1_prototypes/prototypes.pth", "deleted", "3_align", "prototypes", "align", "is missing"),
    # self-training resumes from its own checkpoint, and still reads the pseudo labels
    ("2_pseudo_labels/labels", "deleted", "4_self_train/manifest.json", "pseudo_labels", "self_train",
     "is missing (the pseudo-label folder)"),
    # align starts anew: it reads its initial weights, the checkpoint source_only handed on
    pytest.param("0_source_only/checkpoints/model_final.pth", "deleted", "3_align", "source_only", "align",
                 "is missing", id="anew-reads-initial-weights"),
])
def test_a_damaged_handoff_of_a_finished_stage_is_named_before_the_run(finished_run, toy_root, tmp_path, damaged, how,
                                                                      rerun, maker, reader, says):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    _damage(os.path.join(out, rerun), "deleted")  # a stage to run again
    path = os.path.join(out, damaged)
    _damage(path, how)
    before = _snapshot(out)
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        run_pipeline(tiny_cfg(toy_root, out, *STAGES))
    message = str(err.value)
    folder = os.path.join(out, damaged.split("/")[0])
    assert message.startswith(f"{path} {says}"), message
    assert f"finished stage {maker} handed on ({folder}), and stage {reader} " in message
    assert message.endswith(f"restore it, or delete {folder} to run that stage and the stages after it again")
    assert "\n" not in message
    assert isinstance(err.value, FileNotFoundError) == (how == "deleted")
    assert _snapshot(out) == before  # nothing written, nothing deleted, nothing set aside
    with pytest.raises(type(err.value), match="to run that stage and the stages after it again"):
        check_run(tiny_cfg(toy_root, out, *STAGES), datasets=False)  # --check says the same


@pytest.mark.parametrize("deleted", [
    # read by align, finished; self-training resumes from its own checkpoint and reads align's checkpoint no more
    ("1_prototypes/prototypes.pth", "3_align/checkpoints/model_final.pth", "4_self_train/manifest.json"),
    # pseudo_labels runs again: self-training will read the new labels, not the deleted ones
    ("2_pseudo_labels/labels", "2_pseudo_labels/manifest.json"),
    # align resumes from its own checkpoint and hands on a new one: self-training, run anew, reads that one
    ("0_source_only/checkpoints/model_final.pth", "3_align/manifest.json"),
    # align resumes from its own checkpoint, which holds its prototype bank: the prototypes file is read no more
    pytest.param(("1_prototypes/prototypes.pth", "3_align/manifest.json"), id="resume-reads-no-prototypes"),
])
def test_a_handoff_no_stage_to_run_reads_does_not_stop_the_rerun(finished_run, toy_root, tmp_path, deleted):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    for path in deleted:
        _damage(os.path.join(out, path), "deleted")
    check_run(tiny_cfg(toy_root, out, *STAGES), datasets=False)


def test_a_stage_resuming_without_the_earlier_checkpoint_finishes(finished_run, toy_root, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    for path in ("3_align/checkpoints/model_final.pth", "4_self_train/manifest.json"):
        _damage(os.path.join(out, path), "deleted")
    run_pipeline(tiny_cfg(toy_root, out, *STAGES))
    assert os.path.isfile(os.path.join(out, "4_self_train", "manifest.json"))
