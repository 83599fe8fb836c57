"""Every YAML under configs/ loads with `load_config`, and holds what it promises: the five paper
configs the released code's numbers (docs/method.md), each ablation file (configs/ablations/) the
Table 4 row, α (Table 5) or λ (Table 6) its name says, and the paper number in its comment line."""
from __future__ import annotations

import glob
import os
import re

import pytest

from spcl.config import get_cfg, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs")
ABLATION_DIR = os.path.join(CONFIG_DIR, "ablations")
PAPER_CONFIG = os.path.join(CONFIG_DIR, "gta5_r101.yaml")

ALL_YAMLS = sorted(os.path.relpath(p, CONFIG_DIR)
                   for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))
EXPERIMENTS = [p for p in ALL_YAMLS if "_base_" not in p.split(os.sep)]  # the files one trains with


def flat(node, prefix: str = "") -> dict:
    """{'ALIGN.BASE_LR': 0.00025, …}: every leaf of a config tree under its full key."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(a, b) -> set:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    return {k for k in fa if fa[k] != fb[k]}


def test_configs_found():
    assert len(EXPERIMENTS) >= 6 + 15, EXPERIMENTS
    assert any(p.startswith("_base_" + os.sep) for p in ALL_YAMLS)


@pytest.mark.parametrize("rel", ALL_YAMLS)
def test_every_yaml_loads(rel):
    from spcl.engine import STAGES

    cfg = load_config(os.path.join(CONFIG_DIR, rel))
    assert cfg.is_frozen()
    assert cfg.MODEL.NUM_CLASSES in (16, 19)
    unknown = [s for s in cfg.PIPELINE.STAGES if s not in STAGES]
    assert not unknown, f"{rel}: unknown PIPELINE.STAGES {unknown}"


@pytest.mark.parametrize("rel", EXPERIMENTS)
def test_experiment_writes_into_its_own_output_dir(rel):
    # output/<file name>: two experiments never share a folder (a rerun would resume the other one)
    stem = os.path.splitext(os.path.basename(rel))[0]
    assert load_config(os.path.join(CONFIG_DIR, rel)).OUTPUT_DIR == f"output/{stem}"


def test_no_spec_citations_in_configs_scripts_and_config_code():
    needle = "SPEC" + " §"  # split so that this file does not hold it
    files = [os.path.join(CONFIG_DIR, p) for p in ALL_YAMLS]
    files += glob.glob(os.path.join(REPO, "scripts", "*"))
    files += glob.glob(os.path.join(REPO, "spcl", "config", "*.py"))
    files += glob.glob(os.path.join(REPO, "tests", "config", "*.py"))
    offenders = [os.path.relpath(p, REPO) for p in files if needle in open(p, encoding="utf-8").read()]
    assert not offenders


# ---------------------------------------------------------------------------- paper configs ---
PAPER = {
    # name: (backbone, num_classes, source dataset, source size (W, H), class balance)
    "gta5_r101": ("resnet101", 19, "gta5_train", [1280, 720], True),
    "gta5_vgg16": ("vgg16", 19, "gta5_train", [1280, 720], True),
    "synthia_r101": ("resnet101", 16, "synthia_train", [1280, 760], True),
    "synthia_vgg16": ("vgg16", 16, "synthia_train", [1280, 760], True),
    "synscapes_r101": ("resnet101", 19, "synscapes_train", [1280, 640], False),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_numbers(name):
    backbone, num_classes, source, source_size, balance = PAPER[name]
    cfg = load_config(os.path.join(CONFIG_DIR, name + ".yaml"))
    # model
    assert cfg.MODEL.BACKBONE == backbone
    assert cfg.MODEL.NUM_CLASSES == num_classes
    assert cfg.MODEL.ASPP_DILATIONS == [6, 12, 18, 24]
    assert cfg.MODEL.HEAD_INIT_STD == 0.01
    expected_weights = {"resnet101": "resnet101-", "vgg16": "vgg16-"}[backbone]
    assert os.path.basename(cfg.MODEL.WEIGHTS).startswith(expected_weights)
    if backbone == "resnet101":
        assert cfg.MODEL.FREEZE_BN is True
    # data
    assert cfg.DATASETS.SOURCE == source
    assert cfg.DATASETS.TARGET == "cityscapes_train"
    assert cfg.DATASETS.TEST == "cityscapes_val"
    assert cfg.DATASETS.CLASS_BALANCE is balance
    assert cfg.DATASETS.CLASS_BALANCE_BLOCK == 3000
    assert cfg.INPUT.SOURCE_SIZE == source_size
    assert cfg.INPUT.TARGET_SIZE == [1024, 512]
    assert cfg.INPUT.TEST_SIZE == [1024, 512]
    assert cfg.INPUT.COLOR_JITTER == [0.5, 0.5, 0.5, 0.2]
    assert cfg.INPUT.SELF_TRAIN_BASE_SIZE == [2048, 1024]
    assert cfg.INPUT.SELF_TRAIN_SCALE == [0.5, 1.5]
    assert cfg.INPUT.SELF_TRAIN_CROP == [1024, 512]
    assert cfg.INPUT.SELF_TRAIN_FLIP_PROB == 0.5
    assert cfg.INPUT.PIXEL_MEAN == [0.485, 0.456, 0.406] and cfg.INPUT.PIXEL_STD == [0.229, 0.224, 0.225]
    assert cfg.INPUT.TO_BGR255 is False
    # schedules (released code)
    assert cfg.SOLVER.MOMENTUM == 0.9 and cfg.SOLVER.WEIGHT_DECAY == 5e-4 and cfg.SOLVER.LR_POWER == 0.9
    assert cfg.SOLVER.HEAD_LR_FACTOR == 10.0
    for stage in ("ADV_WARMUP", "ALIGN"):
        node = cfg[stage]
        assert node.BASE_LR == pytest.approx(2.5e-4, rel=0, abs=1e-12)
        assert (node.MAX_ITER, node.STOP_ITER) == (62500, 40000)
        assert (node.SOURCE_BATCH, node.TARGET_BATCH) == (4, 4)
    assert cfg.SELF_TRAIN.BASE_LR == pytest.approx(5e-4, rel=0, abs=1e-12)
    assert (cfg.SELF_TRAIN.MAX_ITER, cfg.SELF_TRAIN.STOP_ITER) == (31250, 20000)
    assert cfg.SELF_TRAIN.TARGET_BATCH == 8 and cfg.SELF_TRAIN.SOURCE_BATCH == 0
    assert cfg.SELF_TRAIN.FREEZE_BN is False
    assert cfg.SOURCE_ONLY.BASE_LR == pytest.approx(2.5e-4, rel=0, abs=1e-12)
    assert (cfg.SOURCE_ONLY.MAX_ITER, cfg.SOURCE_ONLY.STOP_ITER, cfg.SOURCE_ONLY.SOURCE_BATCH) == (62500, 40000, 8)
    assert cfg.ADV_WARMUP.DISC_LR == 1e-4 and cfg.ADV_WARMUP.DISC_BETAS == [0.9, 0.99]
    assert cfg.ADV_WARMUP.ADV_WEIGHT == 0.001
    # a val point every 2,000 iterations (a learning curve), each one at a checkpoint
    assert cfg.SOLVER.EVAL_PERIOD == 2000
    assert cfg.SOLVER.EVAL_PERIOD % cfg.SOLVER.CHECKPOINT_PERIOD == 0
    # losses, prototypes, thresholds
    assert cfg.LOSS.CONTRAST.TEMPERATURE == 100.0
    assert cfg.LOSS.CONTRAST.WEIGHT == 1.0
    assert cfg.LOSS.CONTRAST.SOURCE is True and cfg.LOSS.CONTRAST.TARGET is True
    assert cfg.LOSS.SOURCE_TEMPERATURE == 1.8
    assert cfg.PROTOTYPE.ALPHA == 0.1
    assert cfg.PSEUDO.THRESHOLD_CAP == 0.9
    # paper decisions as defaults
    assert (cfg.PROTOTYPE.ABSENT, cfg.PROTOTYPE.INIT, cfg.PROTOTYPE.SOURCE_MASK) == ("keep", "pixel_mean", "gt")
    assert cfg.ALIGN.TARGET_MASK == "offline"
    assert cfg.PIPELINE.HANDOFF == "last"
    assert cfg.PIPELINE.STAGES == ["adv_warmup", "prototypes", "pseudo_labels", "align", "pseudo_labels",
                                   "self_train"]


# -------------------------------------------------------------------------------- ablations ---
FULL = ["adv_warmup", "prototypes", "pseudo_labels", "align", "pseudo_labels", "self_train"]
# Paper Table 4 rows: the KEY VALUE pairs the former scripts/gta5_r101_ablation_<row>.sh passed to
# configs/gta5_r101.yaml (besides OUTPUT_DIR output/gta5_r101_ablation_<row>), and the paper mIoU.
TABLE4 = {
    "warmup": (["PIPELINE.STAGES", "['adv_warmup']"], "41.4"),
    "source_term": (["PIPELINE.STAGES", "['adv_warmup', 'prototypes', 'align']", "LOSS.CONTRAST.TARGET", "False"],
                    "44.5"),
    "self_train": (["PIPELINE.STAGES", "['adv_warmup', 'pseudo_labels', 'self_train']"], "43.9"),
    "both_terms": (["PIPELINE.STAGES", "['adv_warmup', 'prototypes', 'pseudo_labels', 'align']"], "49.2"),
    "all": (["PIPELINE.STAGES", str(FULL)], "52.1"),
}
ALPHA = {"0.0": "51.1", "0.2": "52.1", "0.5": "52.0", "0.8": "51.7", "1.0": "48.6"}  # paper Table 5
LAMBDA = {"0.01": "50.3", "0.1": "51.4", "0.5": "51.9", "2.0": "51.8", "10.0": "50.1"}  # paper Table 6

EXPECTED_ABLATIONS = ({f"gta5_r101_ablation_{r}.yaml": ("4", m) for r, (_, m) in TABLE4.items()}
                      | {f"gta5_r101_alpha_{a}.yaml": ("5", m) for a, m in ALPHA.items()}
                      | {f"gta5_r101_lambda_{v}.yaml": ("6", m) for v, m in LAMBDA.items()})
COMMENT_RE = re.compile(r"^# Paper Table (\d) \(GTA5 → Cityscapes, ResNet-101\), [^:]+: (\d+\.\d) mIoU\.$")


def _ablation(name: str):
    return load_config(os.path.join(ABLATION_DIR, name))


def test_ablation_files_are_exactly_the_paper_rows():
    assert sorted(os.listdir(ABLATION_DIR)) == sorted(EXPECTED_ABLATIONS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ABLATIONS))
def test_ablation_comment_cites_table_and_number(name):
    with open(os.path.join(ABLATION_DIR, name), encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    m = COMMENT_RE.match(first)
    assert m, f"{name}: first line {first!r} does not cite the paper table and number"
    assert (m.group(1), m.group(2)) == EXPECTED_ABLATIONS[name]


@pytest.mark.parametrize("row", sorted(TABLE4))
def test_table4_row_equals_the_former_script(row):
    opts, _ = TABLE4[row]
    cfg = _ablation(f"gta5_r101_ablation_{row}.yaml")
    former = load_config(PAPER_CONFIG, opts + ["OUTPUT_DIR", f"output/gta5_r101_ablation_{row}"])
    assert flat(cfg) == flat(former)  # key for key, values and types


@pytest.mark.parametrize("row", sorted(TABLE4))
def test_table4_row_does_what_its_name_says(row):
    cfg = _ablation(f"gta5_r101_ablation_{row}.yaml")
    stages, contrast = cfg.PIPELINE.STAGES, cfg.LOSS.CONTRAST
    assert stages[0] == "adv_warmup"
    assert ("self_train" in stages) == (row in ("self_train", "all"))
    assert ("align" in stages) == (row in ("source_term", "both_terms", "all"))
    if "align" in stages:  # the contrastive terms only act in align
        assert contrast.SOURCE is True
        assert contrast.TARGET is (row != "source_term")
        # prototypes before align; target pseudo labels before align only when the target term is on
        assert stages.index("prototypes") < stages.index("align")
        assert ("pseudo_labels" in stages[:stages.index("align")]) == contrast.TARGET
    if "self_train" in stages:
        assert stages[stages.index("self_train") - 1] == "pseudo_labels"
    assert changed_keys(cfg, load_config(PAPER_CONFIG)) <= {"OUTPUT_DIR", "PIPELINE.STAGES",
                                                            "LOSS.CONTRAST.TARGET"}


@pytest.mark.parametrize("key,values,stem", [("PROTOTYPE.ALPHA", ALPHA, "alpha"),
                                             ("LOSS.CONTRAST.WEIGHT", LAMBDA, "lambda")])
def test_sweep_files_change_only_their_value(key, values, stem):
    paper = load_config(PAPER_CONFIG)
    default = flat(paper)[key]
    assert default not in [float(v) for v in values]  # the default run is configs/gta5_r101.yaml
    for value in values:
        cfg = _ablation(f"gta5_r101_{stem}_{value}.yaml")
        assert flat(cfg)[key] == float(value)
        assert isinstance(flat(cfg)[key], float)
        assert changed_keys(cfg, paper) == {"OUTPUT_DIR", key}
        assert cfg.PIPELINE.STAGES == FULL


def test_ablation_base_chain_resolves_with_get_cfg():
    # ablation file -> ../gta5_r101.yaml -> three _base_ pieces, followed by CfgNode.merge_from_file
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ABLATION_DIR, "gta5_r101_ablation_source_term.yaml"))
    assert cfg.PIPELINE.STAGES == ["adv_warmup", "prototypes", "align"]  # the file itself
    assert cfg.LOSS.CONTRAST.TARGET is False
    assert cfg.MODEL.WEIGHTS == "weights/resnet101-63fe2227.pth"  # _base_/deeplabv2_r101.yaml
    assert cfg.DATASETS.CLASS_BALANCE is True  # _base_/gta5_to_cityscapes.yaml
    assert cfg.SOLVER.EVAL_PERIOD == 2000  # _base_/schedule_paper.yaml
    assert cfg.SELF_TRAIN.STOP_ITER == 20000


def test_benchmark_toy_is_the_quick_start_toy_at_256x128():
    # configs/toy_256.yaml may differ from configs/toy.yaml in the image size (and the folders it
    # implies) only: its benchmark numbers are then numbers of the quick start's method and schedule
    toy = load_config(os.path.join(CONFIG_DIR, "toy.yaml"))
    big = load_config(os.path.join(CONFIG_DIR, "toy_256.yaml"))
    sizes = {"DATASETS.TOY.SIZE", "INPUT.SOURCE_SIZE", "INPUT.TARGET_SIZE", "INPUT.TEST_SIZE",
             "INPUT.SELF_TRAIN_BASE_SIZE", "INPUT.SELF_TRAIN_CROP"}
    assert changed_keys(big, toy) == sizes | {"OUTPUT_DIR", "DATASETS.DATA_DIR"}
    assert all(list(flat(toy)[k]) == [128, 64] and list(flat(big)[k]) == [256, 128] for k in sizes)
    assert big.DATASETS.DATA_DIR != toy.DATASETS.DATA_DIR  # two toys never share a folder


def test_toy_contrast_temperature_is_the_measured_one_and_paper_configs_keep_released():
    assert load_config(os.path.join(CONFIG_DIR, "toy.yaml")).LOSS.CONTRAST.TEMPERATURE == 10.0
    for name in ("gta5_r101", "gta5_vgg16", "synthia_r101", "synthia_vgg16", "synscapes_r101"):
        assert load_config(os.path.join(CONFIG_DIR, f"{name}.yaml")).LOSS.CONTRAST.TEMPERATURE == 100.0
