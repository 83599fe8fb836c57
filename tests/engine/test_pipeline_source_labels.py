"""A plan whose source has no labels stops before its first stage (check_run / check_stage_plan, also
`tools/train.py --check`), naming DATASETS.SOURCE and why: it used to train with a zero source loss and
average no source feature into the prototypes. The labelled toy source still passes."""
import os

import pytest

from conftest import run_tool, tiny_cfg
from spcl.engine.pipeline import check_run, check_stage_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def folder_train(toy_root):
    return ("DATASETS.SOURCE", "folder_train",
            "DATASETS.FOLDER.TRAIN_DIR", os.path.join(toy_root, "cityscapes", "leftImg8bit", "train"))


@pytest.mark.parametrize("stages, reader", [("['adv_warmup', 'prototypes']", "adv_warmup"),
                                            ("['source_only']", "source_only"), ("['prototypes']", "prototypes"),
                                            ("['pseudo_labels', 'align']", "align")])
def test_an_unlabelled_source_is_refused_before_the_first_stage(toy_root, tmp_path, stages, reader):
    cfg = tiny_cfg(toy_root, str(tmp_path / "run"), *folder_train(toy_root), "PIPELINE.STAGES", stages,
                   "MODEL.WEIGHTS", "w.pth", "PROTOTYPE.PATH", "p.pth")
    with pytest.raises(ValueError) as info:
        check_stage_plan(cfg)
    msg = str(info.value)
    assert msg.startswith("DATASETS.SOURCE folder_train has no labels (folder_train is read without labels")
    assert f"stage {reader} of PIPELINE.STAGES reads source labels" in msg
    assert "\n" not in msg
    with pytest.raises(ValueError, match="^DATASETS.SOURCE folder_train has no labels"):
        check_run(cfg, datasets=False)


@pytest.mark.parametrize("opts, why", [
    (("DATASETS.SOURCE", "cityscapes_test"), "the Cityscapes test split has no public labels"),
    (("DATASETS.SOURCE", "folder_val", "DATASETS.FOLDER.VAL_DIR", "x"), "DATASETS.FOLDER.VAL_LABEL_DIR is empty"),
])
def test_every_set_without_labels_is_refused_as_source(toy_root, tmp_path, opts, why):
    cfg = tiny_cfg(toy_root, str(tmp_path / "run"), *opts)
    with pytest.raises(ValueError, match=rf"^DATASETS.SOURCE {opts[1]} has no labels \({why}\), and stage adv_warmup"):
        check_run(cfg, datasets=False)


def test_stages_that_do_not_read_the_source_and_labelled_sources_pass(toy_root, tmp_path):
    # only target stages: the source is not read
    check_stage_plan(tiny_cfg(toy_root, str(tmp_path / "a"), *folder_train(toy_root),
                              "PIPELINE.STAGES", "['pseudo_labels', 'self_train']", "MODEL.WEIGHTS", "w.pth"))
    # folder_val with its labels is a labelled source
    check_stage_plan(tiny_cfg(toy_root, str(tmp_path / "b"), "DATASETS.SOURCE", "folder_val",
                              "DATASETS.FOLDER.VAL_DIR", toy_root, "DATASETS.FOLDER.VAL_LABEL_DIR", toy_root))
    # the labelled toy source passes the whole check, its data read
    check_run(tiny_cfg(toy_root, str(tmp_path / "c"), "PIPELINE.STAGES", "['adv_warmup', 'prototypes']"))


def test_train_check_names_the_unlabelled_source_in_one_line(toy_root, tmp_path):
    train_dir = os.path.join(toy_root, "cityscapes", "leftImg8bit", "train")
    cmd = ["--check", "--config", os.path.join(REPO, "configs", "toy.yaml"), "OUTPUT_DIR", str(tmp_path / "run"),
           "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False", "DATASETS.SOURCE", "folder_train",
           "DATASETS.FOLDER.TRAIN_DIR", train_dir, "PIPELINE.STAGES", "['adv_warmup', 'prototypes']"]
    proc = run_tool("train.py", *cmd)
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("train.py: error: DATASETS.SOURCE folder_train has no labels"), proc.stderr
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_each_stage_checks_its_data_in_the_role_it_reads_them(toy_root, tmp_path):
    """SOURCE = TARGET = folder_train (unlabelled): the pseudo-label stage reads it as the target and passes its
    data check; the source stages are refused there, naming DATASETS.SOURCE (before f6c757d's role checks
    a stage's plain names were checked in every role of the run, so the lone pseudo-label stage was refused)."""
    from types import SimpleNamespace

    from spcl.data.check import DataError, preflight
    from spcl.engine.stages import AdvWarmupTrainer, PseudoLabelsStage, SourceOnlyTrainer

    cfg = tiny_cfg(toy_root, str(tmp_path / "run"), *folder_train(toy_root), "DATASETS.TARGET", "folder_train")
    stage = SimpleNamespace(cfg=cfg)
    results = preflight(cfg, PseudoLabelsStage.data_names(stage), str(tmp_path / "cache"))
    assert list(results) == ["folder_train (as target)"] and results["folder_train (as target)"].num_items == 8
    for trainer in (SourceOnlyTrainer, AdvWarmupTrainer):
        with pytest.raises(DataError, match="^DATASETS.SOURCE folder_train has no labels"):
            preflight(cfg, trainer.data_names(stage), str(tmp_path / "cache"))
