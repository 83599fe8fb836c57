"""spcl.config: fresh defaults, `_BASE_` inheritance (also through `get_cfg().merge_from_file`),
`KEY VALUE` overrides, unknown keys with a did-you-mean suggestion, freeze, dump/load round trip,
validation of choice keys."""
from __future__ import annotations

import os

import pytest
import yaml

from spcl.config import (CfgNode, dump_config, get_cfg, load_config, merge_from_file, merge_from_list,
                         validate)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path, text: str) -> str:
    path = str(path)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_get_cfg_returns_a_fresh_copy():
    a = get_cfg()
    default_lr = a.ALIGN.BASE_LR
    a.ALIGN.BASE_LR = 123.0
    a.MODEL.ASPP_DILATIONS.append(99)
    a.DATASETS.TOY.SIZE[0] = 7
    b = get_cfg()
    assert b.ALIGN.BASE_LR == default_lr == 2.5e-4
    assert b.MODEL.ASPP_DILATIONS == [6, 12, 18, 24]
    assert b.DATASETS.TOY.SIZE == [128, 64]
    assert not b.is_frozen()
    assert a is not b


def test_base_chain_override_order(tmp_path):
    # grand.yaml <- base.yaml <- child.yaml: the nearer file wins, untouched keys come from further up.
    (tmp_path / "sub").mkdir()
    # (horizons above the default ALIGN.STOP_ITER 40000: a shorter one is refused by validation)
    _write(tmp_path / "sub" / "grand.yaml", "SEED: 1\nALIGN:\n  BASE_LR: 0.1\n  MAX_ITER: 40011\n"
           "MODEL:\n  BACKBONE: vgg16\n")
    _write(tmp_path / "sub" / "base.yaml", "_BASE_: grand.yaml\nSEED: 2\nALIGN:\n  MAX_ITER: 40022\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: sub/base.yaml\nSEED: 3\n")
    cfg = load_config(child)
    assert cfg.SEED == 3  # child over base over grand
    assert cfg.ALIGN.MAX_ITER == 40022  # base over grand
    assert cfg.ALIGN.BASE_LR == 0.1  # only in grand (deep merge keeps it)
    assert cfg.MODEL.BACKBONE == "vgg16"
    assert cfg.ALIGN.STOP_ITER == get_cfg().ALIGN.STOP_ITER  # untouched default


def test_base_list_later_entry_wins(tmp_path):
    _write(tmp_path / "a.yaml", "SEED: 1\nOUTPUT_DIR: from_a\n")
    _write(tmp_path / "b.yaml", "SEED: 2\n")
    child = _write(tmp_path / "c.yaml", "_BASE_: [a.yaml, b.yaml]\n")
    cfg = load_config(child)
    assert cfg.SEED == 2 and cfg.OUTPUT_DIR == "from_a"


def test_command_line_overrides_win_over_file(tmp_path):
    path = _write(tmp_path / "x.yaml", "SEED: 5\nMODEL:\n  NUM_CLASSES: 16\n")
    cfg = load_config(path, ["SEED", "7", "INPUT.TEST_SIZE", "[64, 32]", "MODEL.FREEZE_BN", "False",
                             "LOSS.CONTRAST.TEMPERATURE", "0.1", "OUTPUT_DIR", "out/y"])
    assert cfg.SEED == 7
    assert cfg.MODEL.NUM_CLASSES == 16
    assert cfg.INPUT.TEST_SIZE == [64, 32]
    assert cfg.MODEL.FREEZE_BN is False
    assert cfg.LOSS.CONTRAST.TEMPERATURE == 0.1
    assert cfg.OUTPUT_DIR == "out/y"


def test_odd_override_list_raises():
    with pytest.raises(ValueError):
        load_config("", ["SEED"])


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "MODEL:\n  BACKBONE: resnet18\n  NOT_A_KEY: 1\n")
    with pytest.raises(KeyError) as e:
        load_config(path)
    assert "MODEL.NOT_A_KEY" in str(e.value)
    assert path in str(e.value)


def test_unknown_top_level_section_in_yaml(tmp_path):
    path = _write(tmp_path / "bad2.yaml", "SOLVR:\n  AMP: bf16\n")
    with pytest.raises(KeyError, match="SOLVR"):
        load_config(path)


def test_unknown_key_in_base_file_names_that_file(tmp_path):
    base = _write(tmp_path / "base_bad.yaml", "ALIGN:\n  TYPO_KEY: 3\n")
    child = _write(tmp_path / "child_ok.yaml", "_BASE_: base_bad.yaml\nSEED: 1\n")
    with pytest.raises(KeyError) as e:
        load_config(child)
    assert "ALIGN.TYPO_KEY" in str(e.value)
    assert base in str(e.value)


def test_value_given_where_section_expected(tmp_path):
    path = _write(tmp_path / "sec.yaml", "SEED:\n  X: 1\n")
    with pytest.raises(KeyError, match="SEED"):
        load_config(path)


def test_unknown_key_on_command_line_names_key():
    with pytest.raises(KeyError) as e:
        load_config("", ["MODEL.BACKBNOE", "resnet18"])
    assert "MODEL.BACKBNOE" in str(e.value)
    with pytest.raises(KeyError, match="NOPE.SEED"):
        load_config("", ["NOPE.SEED", "1"])
    with pytest.raises(KeyError, match="SEED.X"):  # descending into a value
        load_config("", ["SEED.X", "1"])


def test_missing_config_file_raises_naming_it(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(missing)


def test_a_folder_given_as_config_is_named_as_a_folder_with_a_yaml_in_it(tmp_path):
    """Not "config file not found" for a path that is there (`--config configs` for `configs/toy.yaml`)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^config file {folder} is a folder: give a YAML file$"):
        load_config(str(folder))
    _write(folder / "0_notes.txt", "")  # sorts first: not a config
    _write(folder / "b.yaml", "SEED: 1\n")
    _write(folder / "a.yml", "SEED: 2\n")
    with pytest.raises(IsADirectoryError, match=f"^config file {folder} is a folder: give a YAML file, e.g. "
                                                f"{folder / 'a.yml'}$"):
        load_config(str(folder))
    run = _write(tmp_path / "run.yaml", f"_BASE_: {folder}\n")  # named by a base: who named it too
    with pytest.raises(IsADirectoryError, match=f"^config file {folder} \\(named by _BASE_ in {run}\\) is a folder"):
        load_config(run)


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_output_dir_is_refused_naming_the_key(value):
    """os.makedirs("") failed later as "[Errno 2] No such file or directory: ''", naming no key."""
    with pytest.raises(ValueError, match=f"^config key OUTPUT_DIR = {value!r}; expected a folder for the outputs"):
        load_config("", ["OUTPUT_DIR", value])


def test_load_config_is_frozen():
    cfg = load_config()
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SEED = 3
    with pytest.raises(AttributeError):
        cfg.MODEL.BACKBONE = "vgg16"


def test_merge_helpers_on_unfrozen_cfg(tmp_path):
    cfg = get_cfg()
    merge_from_file(cfg, _write(tmp_path / "m.yaml", "SEED: 9\n"))
    merge_from_list(cfg, ["MODEL.NUM_CLASSES", "16"])
    assert cfg.SEED == 9 and cfg.MODEL.NUM_CLASSES == 16 and not cfg.is_frozen()


def test_dump_config_cut_short_leaves_the_recorded_config_intact(tmp_path, monkeypatch):
    """A run's config.yaml is what its rerun is checked against: a write that fails half way (disk full,
    killed) must leave the earlier file as it was and no partial file beside it."""
    import errno

    out = str(tmp_path / "run")
    first = dump_config(load_config("", ["SEED", "1"]), out)
    with open(first) as f:
        before = f.read()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"cannot write config .*config\.yaml: No space left"):
        dump_config(load_config("", ["SEED", "2"]), out)
    with open(first) as f:
        assert f.read() == before
    assert os.listdir(out) == ["config.yaml"]


def test_dump_config_round_trip(tmp_path):
    cfg = load_config("", ["SEED", "11", "MODEL.BACKBONE", "vgg16", "INPUT.TEST_SIZE", "[64, 32]",
                           "PIPELINE.STAGES", "['source_only']", "DATASETS.TOY.SIZE", "[32, 16]",
                           "SOLVER.AMP", "bf16", "ALIGN.BASE_LR", "0.00025"])
    path = dump_config(cfg, str(tmp_path / "out" / "run"))
    assert path == os.path.join(str(tmp_path / "out" / "run"), "config.yaml")
    assert os.path.isfile(path)
    with open(path) as f:
        assert isinstance(yaml.safe_load(f), dict)
    again = load_config(path)
    assert again == cfg
    assert again.PIPELINE.STAGES == ["source_only"] and again.ALIGN.BASE_LR == 0.00025


@pytest.mark.parametrize("key,value", [
    ("PROTOTYPE.ABSENT", "forget"), ("PROTOTYPE.INIT", "median"), ("PROTOTYPE.SOURCE_MASK", "pred"),
    ("ALIGN.TARGET_MASK", "sometimes"), ("PIPELINE.HANDOFF", "first"), ("SOLVER.AMP", "fp8"),
    ("SOLVER.OPTIMIZER", "adam"),
    ("MODEL.NUM_CLASSES", "13"), ("TEST.SCALES", "[1.0, 0.0]"), ("TEST.SCALES", "[-0.5]"), ("TEST.SCALES", "[]"),
    # values that used to end in a traceback far from the config, or in a silently wrong run
    ("INPUT.SOURCE_SIZE", "[128]"), ("INPUT.TEST_SIZE", "[128.0, 64.0]"), ("TEST.WINDOW", "[0, 512]"),
    ("INPUT.TEST_SIZE", "[True, 64]"),  # a bool is no size, though Python counts it an int
    ("INPUT.SELF_TRAIN_SCALE", "[0.0, 1.0]"), ("INPUT.PIXEL_MEAN", "[0.5, 0.5]"),
    ("MODEL.ASPP_DILATIONS", "[6.0, 12.0]"),
    # each key of a rule shared by several keys
    ("INPUT.TARGET_SIZE", "[64]"), ("INPUT.SELF_TRAIN_BASE_SIZE", "[0, 32]"), ("INPUT.SELF_TRAIN_CROP", "[48, -24]"),
    ("TEST.STRIDE", "[0, 341]"), ("SOLVER.CHECKPOINT_PERIOD", "-1"), ("SOLVER.KEEP_CHECKPOINTS", "-2"),
    ("SOURCE_ONLY.SOURCE_BATCH", "0"), ("ADV_WARMUP.TARGET_BATCH", "0"), ("ALIGN.SOURCE_BATCH", "0"),
    ("ALIGN.TARGET_BATCH", "0"), ("TEST.WINDOW", "[512]"),  # (a window of 0 fails the stride check as well)
    ("DATASETS.TOY.SIZE", "[128, -64]"), ("INPUT.SELF_TRAIN_SCALE", "[1.25, 1.0]"),
    ("INPUT.COLOR_JITTER", "[0.3, 0.3]"), ("INPUT.COLOR_JITTER", "[0.3, 0.3, 0.3, -0.1]"),
    ("INPUT.PIXEL_STD", "[0.2, 0.0, 0.2]"), ("MODEL.ASPP_DILATIONS", "[]"), ("MODEL.ASPP_DILATIONS", "[1, 0]"),
    ("SOLVER.LOG_PERIOD", "0"), ("SOLVER.EVAL_PERIOD", "-1"), ("LOSS.CONTRAST.TEMPERATURE", "0.0"),
    ("LOSS.SOURCE_TEMPERATURE", "-1.8"), ("PSEUDO.THRESHOLD_CAP", "0.0"), ("PSEUDO.THRESHOLD_CAP", "1.5"),
    ("PROTOTYPE.ALPHA", "1.5"), ("ALIGN.BASE_LR", "-0.1"), ("SELF_TRAIN.MAX_ITER", "0"),
    ("ADV_WARMUP.SOURCE_BATCH", "0"), ("SELF_TRAIN.TARGET_BATCH", "0"),
    # would have stopped only when the stage that reads them starts, after the training before it
    ("PSEUDO.NUM_BINS", "0"), ("PSEUDO.NUM_BINS", "65537"), ("TEST.BATCH_SIZE", "0"), ("SOLVER.ACCUM_STEPS", "0"),
    ("PROTOTYPE.NUM_IMAGES", "-3"), ("TEST.NUM_IMAGES", "-1"), ("DATALOADER.NUM_WORKERS", "-1"),
    ("DATALOADER.PREFETCH_FACTOR", "0"), ("SOLVER.LR_POWER", "-1.0"),
    # used to end in a traceback (torchvision's hue range, Adam's betas, a conv of width 0, a modulo by zero, the
    # normal init, the optimisers' own range checks) that does not name the key
    ("INPUT.COLOR_JITTER", "[0.5, 0.5, 0.5, 0.51]"), ("INPUT.COLOR_JITTER", "[]"),
    ("ADV_WARMUP.DISC_BETAS", "[0.9]"), ("ADV_WARMUP.DISC_BETAS", "[0.9, 0.99, 0.999]"),
    ("ADV_WARMUP.DISC_BETAS", "[1.0, 0.99]"), ("ADV_WARMUP.DISC_BETAS", "[0.9, -0.1]"),
    ("MODEL.DISC_CHANNELS", "0"), ("DATASETS.CLASS_BALANCE_BLOCK", "0"), ("MODEL.HEAD_INIT_STD", "-1.0"),
    ("MODEL.HEAD_INIT_STD", "0.0"), ("SOLVER.MOMENTUM", "1.5"), ("SOLVER.MOMENTUM", "1.0"),
    ("SOLVER.MOMENTUM", "-0.1"), ("SOLVER.WEIGHT_DECAY", "-0.0005"), ("SOLVER.HEAD_LR_FACTOR", "-10.0"),
    ("SOURCE_ONLY.BASE_LR", "-1.0"), ("ADV_WARMUP.BASE_LR", "-1.0"), ("SELF_TRAIN.BASE_LR", "-1.0"),
    ("ADV_WARMUP.DISC_LR", "-1.0"),
    # used to be accepted silently, though meaningless
    ("INPUT.FLIP_PROB", "1.5"), ("INPUT.FLIP_PROB", "-0.5"), ("INPUT.SELF_TRAIN_FLIP_PROB", "1.01"),
    ("ADV_WARMUP.ADV_WEIGHT", "-5.0"), ("LOSS.CONTRAST.WEIGHT", "-1.0"),
    ("SOURCE_ONLY.STOP_ITER", "0"), ("ADV_WARMUP.STOP_ITER", "0"), ("ALIGN.STOP_ITER", "-1"),
    ("SELF_TRAIN.STOP_ITER", "0"), ("ALIGN.MAX_ITER", "0"), ("SOURCE_ONLY.MAX_ITER", "0"),
    ("ADV_WARMUP.MAX_ITER", "0"),
])
def test_validate_rejects_bad_choices(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config("", [key, value])
    cfg = get_cfg()
    merge_from_list(cfg, [key, value])
    with pytest.raises(ValueError):
        validate(cfg)


@pytest.mark.parametrize("key,value", [
    ("PROTOTYPE.ABSENT", "decay"), ("PROTOTYPE.INIT", "image_mean"), ("PROTOTYPE.SOURCE_MASK", "gt_and_pred"),
    ("ALIGN.TARGET_MASK", "online"), ("PIPELINE.HANDOFF", "best"), ("SOLVER.AMP", "fp16"),
    ("MODEL.NUM_CLASSES", "16"), ("TEST.SCALES", "[0.5, 1.0, 1.75]"),
    # the edges of the value rules
    ("PROTOTYPE.ALPHA", "1.0"), ("PROTOTYPE.ALPHA", "0.0"), ("PSEUDO.THRESHOLD_CAP", "1.0"),
    ("SOLVER.KEEP_CHECKPOINTS", "0"), ("SOLVER.CHECKPOINT_PERIOD", "0"), ("INPUT.COLOR_JITTER", "[0.0, 0.0, 0.0, 0.0]"),
    ("INPUT.SELF_TRAIN_SCALE", "[1.0, 1.0]"), ("ALIGN.BASE_LR", "0.0"), ("MODEL.ASPP_DILATIONS", "[1]"),
    ("PSEUDO.NUM_BINS", "65536"), ("PSEUDO.NUM_BINS", "1"), ("PROTOTYPE.NUM_IMAGES", "0"), ("SOLVER.LR_POWER", "0.0"),
    ("INPUT.COLOR_JITTER", "[2.0, 2.0, 2.0, 0.5]"), ("ADV_WARMUP.DISC_BETAS", "[0.0, 0.0]"),
    ("ADV_WARMUP.DISC_BETAS", "[0.999, 0.9999]"), ("MODEL.DISC_CHANNELS", "1"), ("DATASETS.CLASS_BALANCE_BLOCK", "1"),
    ("MODEL.HEAD_INIT_STD", "1e-06"), ("SOLVER.MOMENTUM", "0.0"), ("SOLVER.MOMENTUM", "0.999"),
    ("SOLVER.WEIGHT_DECAY", "0.0"), ("SOLVER.HEAD_LR_FACTOR", "0.0"), ("SOURCE_ONLY.BASE_LR", "0.0"),
    ("ADV_WARMUP.DISC_LR", "0.0"), ("INPUT.FLIP_PROB", "1.0"), ("INPUT.FLIP_PROB", "0.0"),
    ("INPUT.SELF_TRAIN_FLIP_PROB", "1.0"), ("ADV_WARMUP.ADV_WEIGHT", "0.0"), ("LOSS.CONTRAST.WEIGHT", "0.0"),
    ("ALIGN.STOP_ITER", "1"), ("SELF_TRAIN.STOP_ITER", "31250"),  # SELF_TRAIN.MAX_ITER (default)
    ("ALIGN.SOURCE_BATCH", "1"),  # one image a batch
])
def test_validate_accepts_documented_choices(key, value):
    cfg = load_config("", [key, value])
    node = cfg
    for name in key.split("."):
        node = node[name]
    assert str(node) == value


def test_validate_names_a_list_key_set_to_a_number_by_code():
    """validate() on a tree set by code (no type check on assignment): the key's rule, not a TypeError."""
    cfg = get_cfg()
    cfg.INPUT.TEST_SIZE = 512
    with pytest.raises(ValueError, match=r"^config key INPUT[.]TEST_SIZE = 512; expected two positive integers"):
        validate(cfg)


@pytest.mark.parametrize("stage", ["SOURCE_ONLY", "ADV_WARMUP", "ALIGN", "SELF_TRAIN"])
def test_stop_iter_beyond_max_iter_names_both_keys(stage):
    """The trainer used to clamp STOP_ITER to MAX_ITER silently: a run shorter than its config says."""
    with pytest.raises(ValueError) as e:
        load_config("", [f"{stage}.MAX_ITER", "100", f"{stage}.STOP_ITER", "101"])
    assert f"{stage}.STOP_ITER = 101" in str(e.value) and f"{stage}.MAX_ITER = 100" in str(e.value)
    with pytest.raises(ValueError, match=f"{stage}.STOP_ITER"):  # a horizon lowered under the default STOP_ITER
        load_config("", [f"{stage}.MAX_ITER", "100"])
    cfg = load_config("", [f"{stage}.MAX_ITER", "100", f"{stage}.STOP_ITER", "100"])  # the edge: run to the horizon
    assert (cfg[stage].STOP_ITER, cfg[stage].MAX_ITER) == (100, 100)
    cfg = load_config("", [f"{stage}.MAX_ITER", "1", f"{stage}.STOP_ITER", "1"])
    assert (cfg[stage].STOP_ITER, cfg[stage].MAX_ITER) == (1, 1)
    with pytest.raises(ValueError, match=rf"^config key {stage}[.]MAX_ITER = 0; expected at least 1"):
        load_config("", [f"{stage}.MAX_ITER", "0", f"{stage}.STOP_ITER", "0"])  # the horizon's own rule


@pytest.mark.parametrize("key,value,expected", [
    ("INPUT.COLOR_JITTER", "[0.5, 0.5, 0.5, 0.51]", "hue at most 0.5"),
    ("ADV_WARMUP.DISC_BETAS", "[0.9]", "two Adam betas"),
    ("SOLVER.MOMENTUM", "1.5", r"in \[0, 1\)"),
    ("INPUT.FLIP_PROB", "1.5", r"probability in \[0, 1\]"),
    ("ADV_WARMUP.DISC_LR", "-1.0", "learning rate >= 0"),
    ("MODEL.HEAD_INIT_STD", "-1.0", "positive standard deviation"),
])
def test_a_bad_value_names_the_key_and_what_was_expected(key, value, expected):
    with pytest.raises(ValueError, match=rf"^config key {key.replace('.', r'[.]')} = .*; expected .*{expected}"):
        load_config("", [key, value])


# ------------------------------------------------------ get_cfg().merge_from_file follows _BASE_ ---
def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_get_cfg_is_a_base_aware_cfgnode():
    cfg = get_cfg()
    assert isinstance(cfg, CfgNode) and isinstance(cfg.MODEL, CfgNode) and isinstance(cfg.DATASETS.TOY, CfgNode)
    assert isinstance(cfg.clone(), CfgNode)
    assert isinstance(load_config(), CfgNode)


def test_method_merge_from_file_equals_load_config_key_for_key():
    path = os.path.join(REPO, "configs", "gta5_r101.yaml")
    cfg = get_cfg()
    cfg.merge_from_file(path)  # plain yacs: "Non-existent config key: _BASE_"
    got, want = _flat(cfg), _flat(load_config(path))
    assert got == want
    assert len(got) > 80
    assert got["MODEL.WEIGHTS"] == "weights/resnet101-63fe2227.pth"  # from a _BASE_ piece
    assert got != _flat(get_cfg())


def test_method_merges_chain_in_order_and_checks_keys(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "grand.yaml", "SEED: 1\nALIGN:\n  BASE_LR: 0.1\n  MAX_ITER: 11\n")
    _write(tmp_path / "sub" / "base.yaml", "_BASE_: grand.yaml\nSEED: 2\nALIGN:\n  MAX_ITER: 22\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: [sub/base.yaml]\nSEED: 3\n")
    cfg = get_cfg()
    cfg.merge_from_file(child)
    assert (cfg.SEED, cfg.ALIGN.MAX_ITER, cfg.ALIGN.BASE_LR) == (3, 22, 0.1)
    bad = _write(tmp_path / "sub" / "bad.yaml", "ALIGN:\n  BASE_LRR: 0.1\n")
    top = _write(tmp_path / "top.yaml", "_BASE_: sub/bad.yaml\n")
    with pytest.raises(KeyError) as e:
        get_cfg().merge_from_file(top)
    assert bad in str(e.value) and "ALIGN.BASE_LRR" in str(e.value)


def test_method_merge_from_list_checks_keys():
    cfg = get_cfg()
    cfg.merge_from_list(["SEED", "4", "ALIGN.BASE_LR", "0.5"])
    assert cfg.SEED == 4 and cfg.ALIGN.BASE_LR == 0.5
    with pytest.raises(KeyError, match="did you mean 'MODEL.BACKBONE'"):
        cfg.merge_from_list(["MODEL.BACKBNOE", "vgg16"])


# ------------------------------------------------------------------------------- did you mean ---
@pytest.mark.parametrize("text,unknown,suggestion", [
    ("ALIGN:\n  BASE_LRR: 0.1\n", "ALIGN.BASE_LRR", "ALIGN.BASE_LR"),  # misspelt leaf
    ("SOLVR:\n  AMP: bf16\n", "SOLVR", "SOLVER"),  # misspelt section
    ("LOSS:\n  CONTRST:\n    WEIGHT: 2.0\n", "LOSS.CONTRST", "LOSS.CONTRAST"),  # misspelt inner section
    ("PROTOTYPES:\n  ALPHA: 0.5\n", "PROTOTYPES", "PROTOTYPE"),
    ("DATA:\n  DATA_DIR: x\n", "DATA", "DATASETS"),  # no close last part: the closest full key
])
def test_unknown_key_in_yaml_suggests_closest(tmp_path, text, unknown, suggestion):
    path = _write(tmp_path / "typo.yaml", text)
    with pytest.raises(KeyError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"unknown config key '{unknown}' in {path}" in msg
    assert msg.endswith(f"did you mean '{suggestion}'?")


@pytest.mark.parametrize("key,suggestion", [
    ("ALIGN.BASE_LRR", "ALIGN.BASE_LR"),  # misspelt leaf
    ("SOLVR.AMP", "SOLVER.AMP"),  # misspelt section
    ("LOSS.CONTRAST.WIEGHT", "LOSS.CONTRAST.WEIGHT"),
    ("PROTOTYPE.APLHA", "PROTOTYPE.ALPHA"),
])
def test_unknown_key_on_command_line_suggests_closest(key, suggestion):
    with pytest.raises(KeyError) as e:
        load_config("", [key, "1"])
    msg = str(e.value)
    assert msg.startswith(f"unknown config key '{key}' on the command line")
    assert msg.endswith(f"did you mean '{suggestion}'?")


def test_unknown_key_far_from_every_key_has_no_suggestion(tmp_path):
    with pytest.raises(KeyError) as e:
        load_config("", ["QQQQQQQQ.ZZZZZZ", "1"])
    assert "did you mean" not in str(e.value)
    path = _write(tmp_path / "far.yaml", "XYZZY: 1\n")
    with pytest.raises(KeyError) as e:
        load_config(path)
    assert "did you mean" not in str(e.value) and "XYZZY" in str(e.value)


def test_section_given_a_value_on_command_line():
    with pytest.raises(KeyError, match="'MODEL' on the command line is a section"):
        load_config("", ["MODEL", "vgg16"])


@pytest.mark.parametrize("key,value,expected", [("MODEL.BN_RUNNING_STATS", "source", "one of"),
                                                ("PSEUDO.ORACLE", "gt", "one of")])
def test_a_bad_choice_names_the_key(key, value, expected):
    from spcl.config import get_cfg
    from spcl.config.config import validate

    cfg = get_cfg()
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=f"{key}.*{expected}"):
        validate(cfg)


def test_a_sliding_stride_beyond_its_window_is_refused_when_the_config_loads():
    """It used to stop the run at its first evaluation, after a whole stage had trained."""
    with pytest.raises(ValueError, match=r"config key TEST\.STRIDE = \[30, 30\]; expected at most TEST\.WINDOW = "
                                         r"\[40, 20\] in each of \(W, H\)"):
        load_config("", ["TEST.WINDOW", "[40, 20]", "TEST.STRIDE", "[30, 30]"])
    assert list(load_config("", ["TEST.WINDOW", "[40, 20]", "TEST.STRIDE", "[40, 20]"]).TEST.STRIDE) == [40, 20]


# ------------------------------------------------------------------------- DATASETS.FOLDER.ID_MAP ---
@pytest.mark.parametrize("value,message", [
    ("[7, 0]",
     r"entry 7 is not a \[raw id, train id\] pair of ints; write a list of pairs, e.g. \[\[7, 0\], \[8, 1\]\]$"),
    ("[[7, 0, 1]]", r"entry \[7, 0, 1\] is not a \[raw id, train id\] pair"),
    ("[[7.0, 0]]", r"entry \[7.0, 0\] is not a \[raw id, train id\] pair of ints"),
    ("[[7, True]]", r"entry \[7, True\] is not a \[raw id, train id\] pair"),
    ("[[65536, 0]]", r"entry \[65536, 0\] has raw id 65536; expected a label file value in \[0, 65535\]"),
    ("[[-1, 0]]", r"entry \[-1, 0\] has raw id -1"),
    ("[[7, 19]]", r"entry \[7, 19\] has train id 19; expected one in \[0, 19\) \(MODEL.NUM_CLASSES\) or 255"),
    ("[[26, 25]]", r"entry \[26, 25\] has train id 25"),
    ("[[7, -1]]", r"entry \[7, -1\] has train id -1"),
    ("[[7, 0], [8, 1], [7, 2]]", r"raw id 7 is mapped to 0 and to 2; expected one train id per raw id"),
])
def test_a_bad_id_map_is_refused_when_the_config_loads(value, message):
    """A flat pair used to crash the data check with `TypeError: object of type 'int' has no len()`, and a
    train id >= NUM_CLASSES to pass --check and then blame the label files."""
    with pytest.raises(ValueError, match=r"^DATASETS[.]FOLDER[.]ID_MAP: " + message):
        load_config("", ["DATASETS.FOLDER.ID_MAP", value])


def test_an_id_map_written_flat_in_yaml_is_refused(tmp_path):
    path = _write(tmp_path / "flat.yaml", "DATASETS:\n  FOLDER:\n    ID_MAP: [7, 0]\n")
    with pytest.raises(ValueError, match=r"^DATASETS[.]FOLDER[.]ID_MAP: entry 7 is not a \[raw id, train id\] pair"):
        load_config(path)


def test_the_train_ids_an_id_map_may_hold_follow_num_classes():
    with pytest.raises(ValueError, match=r"train id 16; expected one in \[0, 16\)"):
        load_config("", ["MODEL.NUM_CLASSES", "16", "DATASETS.FOLDER.ID_MAP", "[[7, 16]]"])
    cfg = load_config("", ["DATASETS.FOLDER.ID_MAP", "[[0, 255], [7, 0], [7, 0], [65535, 18], [33, 255]]"])
    assert cfg.DATASETS.FOLDER.ID_MAP == [[0, 255], [7, 0], [7, 0], [65535, 18], [33, 255]]
    assert load_config("", ["DATASETS.FOLDER.ID_MAP", "((7, 0), (8, 1))"]).DATASETS.FOLDER.ID_MAP == [(7, 0), (8, 1)]


# -------------------------------------------------------------- names the builders know ---
@pytest.mark.parametrize("key,value", [("MODEL.BACKBONE", "resnet19"), ("MODEL.BACKBONE", "ResNet101"),
                                       ("DATASETS.SOURCE", "gta_train"), ("DATASETS.TARGET", "cityscapes"),
                                       ("DATASETS.TEST", "cityscapes_vall")])
def test_a_name_the_builder_does_not_know_is_refused_when_the_config_loads(key, value):
    """They used to pass --check and stop when the stage built its model or data."""
    from spcl.data.build import CATALOG
    from spcl.modeling.backbones import BACKBONES

    allowed = BACKBONES if key == "MODEL.BACKBONE" else CATALOG
    with pytest.raises(ValueError) as e:
        load_config("", [key, value])
    assert str(e.value) == f"config key {key} = {value!r}; expected one of {allowed}"


def test_every_name_the_builder_knows_is_accepted():
    from spcl.data.build import CATALOG
    from spcl.modeling.backbones import BACKBONES

    for name in BACKBONES:
        assert load_config("", ["MODEL.BACKBONE", name]).MODEL.BACKBONE == name
    for name in CATALOG:
        assert load_config("", ["DATASETS.TEST", name]).DATASETS.TEST == name


def test_an_unknown_pipeline_stage_is_refused_when_the_config_loads():
    from spcl.engine.stages import STAGES

    with pytest.raises(ValueError) as e:
        load_config("", ["PIPELINE.STAGES", "['adv_warmup', 'algin']"])
    assert str(e.value) == (f"config key PIPELINE.STAGES = ['adv_warmup', 'algin']; 'algin' is no stage: expected each "
                            f"one of {tuple(STAGES)}")
    assert load_config("", ["PIPELINE.STAGES", str(list(STAGES))]).PIPELINE.STAGES == list(STAGES)
    with pytest.raises(ValueError, match="; 'algin' is no stage"):  # of two, the first
        load_config("", ["PIPELINE.STAGES", "['algin', 'self_trian']"])


# ------------------------------------------------------------------ types and empty values ---
@pytest.mark.parametrize("key,value,message", [
    ("SEED", "abc", "SEED: expected an int, got 'abc' (from the command line)"),
    ("SEED", "1.5", "SEED: expected an int, got 1.5 (from the command line)"),
    ("ALIGN.BASE_LR", "'1'", "ALIGN.BASE_LR: expected a float, got '1' (from the command line)"),
    ("MODEL.FREEZE_BN", "yes", "MODEL.FREEZE_BN: expected True or False, got 'yes' (from the command line)"),
    ("INPUT.TEST_SIZE", "512", "INPUT.TEST_SIZE: expected a list, got 512 (from the command line)"),
    ("OUTPUT_DIR", "None", 'OUTPUT_DIR: expected a string, got an empty value (from the command line); write "" for '
                           "the empty string"),
    ("SEED", "None", "SEED: expected an int, got an empty value (from the command line)"),  # no 'write ""' hint
    ("ALIGN.BASE_LR", "True", "ALIGN.BASE_LR: expected a float, got True (from the command line)"),  # a bool is no int
    ("SEED", "[1, x]", "SEED: expected an int, got '[1, x]' (from the command line)"),  # no hint on quoting a list
])
def test_a_value_of_the_wrong_type_on_the_command_line_is_one_line(key, value, message):
    """yacs used to say `Type mismatch (<class 'int'> vs. <class 'str'>) with values (0 vs. abc) for config key:
    SEED`."""
    with pytest.raises(ValueError) as e:
        load_config("", [key, value])
    assert str(e.value) == message
    with pytest.raises(ValueError, match="^" + key.replace(".", "[.]") + ": expected"):
        get_cfg().merge_from_list([key, value])


def test_a_value_of_the_wrong_type_in_yaml_names_the_file_that_holds_it(tmp_path):
    base = _write(tmp_path / "base.yaml", "SEED: abc\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nOUTPUT_DIR: out\n")
    with pytest.raises(ValueError) as e:
        load_config(child)
    assert str(e.value) == f"SEED: expected an int, got 'abc' (from {base})"
    path = _write(tmp_path / "lr.yaml", "SOLVER:\n  MOMENTUM: [0.9]\n")
    with pytest.raises(ValueError) as e:
        get_cfg().merge_from_file(path)
    assert str(e.value) == f"SOLVER.MOMENTUM: expected a float, got [0.9] (from {path})"


def test_an_int_for_a_float_key_is_that_float_on_the_command_line_and_in_yaml(tmp_path):
    """`LOSS.CONTRAST.TEMPERATURE 10` (as docs/toy.md writes it): yacs alone refuses an int for a float key."""
    cfg = load_config("", ["LOSS.CONTRAST.TEMPERATURE", "10", "ALIGN.BASE_LR", "0", "SEED", "3"])
    assert (cfg.LOSS.CONTRAST.TEMPERATURE, cfg.ALIGN.BASE_LR, cfg.SEED) == (10.0, 0.0, 3)
    assert type(cfg.LOSS.CONTRAST.TEMPERATURE) is float and type(cfg.ALIGN.BASE_LR) is float and type(cfg.SEED) is int
    path = _write(tmp_path / "t.yaml", "LOSS:\n  CONTRAST:\n    TEMPERATURE: 10\n")
    assert type(load_config(path).LOSS.CONTRAST.TEMPERATURE) is float
    assert load_config(path).LOSS.CONTRAST.TEMPERATURE == 10.0
    with pytest.raises(ValueError, match="^SEED: expected an int, got 1.5"):  # the other way is not the same number
        load_config("", ["SEED", "1.5"])


@pytest.mark.parametrize("key", ["DATASETS.FOLDER.TRAIN_DIR", "MODEL.WEIGHTS", "SEED", "INPUT.TEST_SIZE"])
def test_a_value_left_empty_in_yaml_is_refused_naming_the_key(tmp_path, key):
    """yacs read `TRAIN_DIR:` as None and let it replace the path: `image folder not found: None` at the
    first stage. No key takes None; an empty path is written ""."""
    section, _, name = key.rpartition(".")
    text = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(section.split("."))) if section else ""
    path = _write(tmp_path / "empty.yaml", text + "  " * (key.count(".")) + f"{name}:\n")
    with pytest.raises(ValueError, match=rf"^{key.replace('.', '[.]')}: expected .*, got an empty value \(from "
                                         rf"{path}\)"):
        load_config(path)


def test_an_empty_string_is_how_a_path_is_left_unset(tmp_path):
    path = _write(tmp_path / "unset.yaml", 'MODEL:\n  WEIGHTS: ""\nDATASETS:\n  FOLDER:\n    VAL_LABEL_DIR: ""\n')
    cfg = load_config(path)
    assert cfg.MODEL.WEIGHTS == "" and cfg.DATASETS.FOLDER.VAL_LABEL_DIR == ""


def test_a_section_left_empty_in_yaml_holds_no_keys(tmp_path):
    """`MODEL:` with every key below it commented out used to replace the whole MODEL section by None."""
    path = _write(tmp_path / "sec.yaml", "SEED: 3\nMODEL:\n#  BACKBONE: vgg16\nDATASETS:\n  FOLDER:\n")
    cfg = load_config(path)
    assert cfg.SEED == 3 and cfg.MODEL == get_cfg().MODEL and cfg.DATASETS == get_cfg().DATASETS
    with pytest.raises(KeyError, match=f"config key 'MODEL' in {path}-x is a section, not a value"):
        load_config(_write(f"{path}-x", "MODEL: vgg16\n"))


# ------------------------------------------------------------------------ did you mean, more ---
@pytest.mark.parametrize("key,suggestions", [
    # the last part is a key of other sections: those, not a sibling that merely looks alike (SOLVER.LR_POWER)
    ("SOLVER.BASE_LRR", ["SOURCE_ONLY.BASE_LR", "ADV_WARMUP.BASE_LR", "ALIGN.BASE_LR", "SELF_TRAIN.BASE_LR"]),
    ("SOLVER.BASE_LR", ["SOURCE_ONLY.BASE_LR", "ADV_WARMUP.BASE_LR", "ALIGN.BASE_LR", "SELF_TRAIN.BASE_LR"]),
    ("MODEL.AMP", ["SOLVER.AMP"]),
    ("ALIGN.DISC_LR", ["ADV_WARMUP.DISC_LR"]),
    ("ALIGNN.BASE_LR", ["ALIGN.BASE_LR"]),  # a misspelt section among several with that key
    # the wrong case
    ("MODEL.freeze_bn", ["MODEL.FREEZE_BN"]), ("model.backbone", ["MODEL.BACKBONE"]), ("seed", ["SEED"]),
    ("model.backbnoe", ["MODEL.BACKBONE"]),
    # the last part exactly under another section wins over a sibling that merely looks alike
    ("LOSS.TEMPERATURE", ["LOSS.CONTRAST.TEMPERATURE"]),  # not LOSS.SOURCE_TEMPERATURE
    # ... unless a sibling is nearly the same: a missing plural 's' most likely meant the own section's key
    ("MODEL.WEIGHT", ["MODEL.WEIGHTS", "LOSS.CONTRAST.WEIGHT"]),
    ("PSEUDO_DIR", ["DATASETS.PSEUDO_DIR"]),  # not a key of section PSEUDO
    ("ALIGNN.BASE_LRR", ["ALIGN.BASE_LR"]),  # both parts misspelt: of the close last parts, the close section's
    ("LOSS.CONTRAST_WEIGHT", ["LOSS.CONTRAST.WEIGHT"]),  # no close last part: the closest full key
])
def test_an_unknown_key_suggests_keys_of_other_sections_and_upper_case(key, suggestions):
    with pytest.raises(KeyError) as e:
        load_config("", [key, "1"])
    quoted = [f"'{k}'" for k in suggestions]
    said = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    assert str(e.value) == f"unknown config key '{key}' on the command line; did you mean {said}?"


@pytest.mark.parametrize("key,section", [("SOLVR", "SOLVER"), ("DATASET.TOY", "DATASETS.TOY"), ("PSEUD", "PSEUDO"),
                                         ("LOSS.CONTRST", "LOSS.CONTRAST"), ("SOLVER.ALIGN", "ALIGN")])
def test_a_section_suggested_for_a_value_is_said_as_its_keys(key, section):
    """A key given a value is never told a section's name alone (following that gave "is a section, not a
    value"): the section is said with the first keys it holds, each one a key that takes a value."""
    with pytest.raises(KeyError) as e:
        load_config("", [key, "1"])
    node = get_cfg()
    for part in section.split("."):
        node = node[part]
    inner = [f"{section}.{k}" for k in node]
    assert all(not isinstance(node[k], CfgNode) for k in list(node)[:3])
    assert str(e.value) == (f"unknown config key '{key}' on the command line; did you mean a key of section "
                            f"'{section}' ({', '.join(inner[:3])}{', …' if len(inner) > 3 else ''})?")


def test_an_unknown_section_in_yaml_is_told_a_section(tmp_path):
    """A misspelt key holding keys in a file is told the close section, not a close key of a value."""
    path = _write(tmp_path / "s.yaml", "DATASETS:\n  TOYS:\n    SEED: 1\n")
    with pytest.raises(KeyError) as e:
        load_config(path)
    assert str(e.value) == f"unknown config key 'DATASETS.TOYS' in {path}; did you mean 'DATASETS.TOY'?"
    path = _write(tmp_path / "v.yaml", "SOLVER:\n  AMPP:\n    X: 1\n")  # close to a value, and inside SOLVER
    with pytest.raises(KeyError) as e:
        load_config(path)
    assert str(e.value) == f"unknown config key 'SOLVER.AMPP' in {path}"


@pytest.mark.parametrize("opts,said", [
    (["SEED=1"], "'SEED=1' is one token; write SEED 1 (a space, not =)"),
    (["SEED", "1", "OUTPUT_DIR=/tmp/a"], "'OUTPUT_DIR=/tmp/a' is one token; write OUTPUT_DIR /tmp/a (a space, not =)"),
    (["SEED", "1", "OUTPUT_DIR"], "OUTPUT_DIR has no value"),
    # not KEY=VALUE: no key before the '=', or a second '=' (which one was meant as the space is unclear)
    (["=5"], "=5 has no value"), (["SEED", "1", "OUTPUT_DIR=a=b"], "OUTPUT_DIR=a=b has no value"),
])
def test_an_odd_list_of_overrides_names_the_token_that_breaks_the_pairs(opts, said):
    with pytest.raises(ValueError) as e:
        load_config("", opts)
    assert str(e.value) == f"config overrides must be KEY VALUE pairs: {said}"


@pytest.mark.parametrize("key,tokens,value", [
    ("PIPELINE.STAGES", ["[align,", "self_train]"], ["align", "self_train"]),
    ("PIPELINE.STAGES", ["[source_only,", "prototypes,", "align]"], ["source_only", "prototypes", "align"]),
    ("TEST.SCALES", ["[0.5,", "1.5]"], [0.5, 1.5]),
    ("DATASETS.FOLDER.ID_MAP", ["[[7,", "0],", "[8,", "1]]"], [[7, 0], [8, 1]]),  # nested, as the shell splits it
    ("PIPELINE.STAGES", ["[align]"], ["align"]),  # one token, its names unquoted: a string to yacs
    ("PIPELINE.STAGES", ["(align)"], ["align"]),  # a tuple likewise
    ("PIPELINE.STAGES", ["[align,", "self_train,]"], ["align", "self_train"]),  # a trailing comma
    ("PIPELINE.STAGES", ["[align,", "self_train']"], ["align", "self_train"]),  # a quote left unpaired
])
def test_a_list_written_as_the_shell_splits_it_gets_a_quoted_form_that_loads(key, tokens, value):
    """`PIPELINE.STAGES [align, self_train]` reaches the config as two tokens (an odd list, or with three names
    an even one whose second "key" is `self_train,`), and `[align]` as a string: each error says how to quote
    it, and the quoted form it gives loads as the list meant (an even split included)."""
    for before in ([], ["SEED", "1"]):  # the first value, or one after another pair
        with pytest.raises(ValueError) as e:
            load_config("", [*before, key, *tokens])
        msg = str(e.value)
        assert f"{' '.join(tokens)}" in msg and "\n" not in msg
        assert len(tokens) == 1 or f"was split at its spaces into {len(tokens)} tokens" in msg
    quoted = msg.rsplit(' "', 1)[1].rstrip('"')
    node = load_config("", [key, quoted])
    for part in key.split("."):
        node = node[part]
    assert [list(v) if isinstance(v, (list, tuple)) else v for v in node] == value


@pytest.mark.parametrize("text,key,first,line,column", [
    ("SOLVER:\n  AMP: bf16\nMODEL:\n  BACKBONE: resnet18\nSOLVER:\n  MOMENTUM: 0.8\n", "SOLVER", 1, 5, 1),
    ("MODEL:\n  BACKBONE: resnet18\n  BACKBONE: vgg16\n", "BACKBONE", 2, 3, 3),
])
def test_a_key_given_twice_in_a_file_is_refused(tmp_path, text, key, first, line, column):
    """PyYAML keeps the last of two equal keys without a word: a second SOLVER section dropped the first's keys
    (here SOLVER.AMP bf16). The file is refused, naming both lines; the same keys in two files (`_BASE_`) merge."""
    path = _write(tmp_path / "dup.yaml", text)
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert str(e.value) == (f"config file {path} is not valid YAML: line {line}, column {column}: key '{key}' appears "
                            f"twice in one mapping (first at line {first}); YAML would keep only the last: merge them")
    _write(tmp_path / "base.yaml", "SOLVER:\n  AMP: bf16\n")
    cfg = load_config(_write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  MOMENTUM: 0.8\n"))
    assert cfg.SOLVER.AMP == "bf16" and cfg.SOLVER.MOMENTUM == 0.8


def test_a_key_that_is_a_list_is_one_line_naming_the_file(tmp_path):
    """`? [a, b]` (a YAML key that is a list) used to end in `TypeError: unhashable type: 'list'` from the check
    for keys given twice, with no file named."""
    path = _write(tmp_path / "k.yaml", "? [a, b]\n: 1\n")
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert _one_line_error(e) == (f"config file {path} is not valid YAML: line 1, column 3: found unhashable key "
                                  "(while constructing a mapping started at line 1, column 1)")


def test_an_unknown_key_in_the_wrong_case_in_yaml(tmp_path):
    path = _write(tmp_path / "case.yaml", "MODEL:\n  freeze_bn: false\n")
    with pytest.raises(KeyError) as e:
        load_config(path)
    assert str(e.value) == f"unknown config key 'MODEL.freeze_bn' in {path}; did you mean 'MODEL.FREEZE_BN'?"


# ------------------------------------------------------------------ `_BASE_` mistakes: one line, naming the file ---

def _one_line_error(excinfo) -> str:
    """The message a tool prints (tools/_common.py run_main: a KeyError's first argument, else str)."""
    e = excinfo.value
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    assert "\n" not in message, message
    return message


def test_a_yaml_syntax_error_in_a_base_names_the_file_line_and_column_and_who_named_it(tmp_path):
    base = _write(tmp_path / "base.yaml", "SEED: 1\nALIGN:\n  BASE_LR: [0.1\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ValueError) as e:
        load_config(child)
    message = _one_line_error(e)
    assert message.startswith(f"config file {base} is not valid YAML: line 4, column 1: expected ',' or ']'")
    assert "flow sequence started at line 3, column 12" in message
    assert message.endswith(f"(named by _BASE_ in {child})")


def test_a_yaml_syntax_error_in_the_file_itself_names_it(tmp_path):
    path = _write(tmp_path / "s.yaml", f"_BASE_: {REPO}/configs/toy.yaml\nSEED: \"\\q\"\n")
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert _one_line_error(e) == (f"config file {path} is not valid YAML: line 2, column 9: found unknown escape "
                                  "character 'q' (while scanning a double-quoted scalar started at line 2, column 7)")


def test_a_control_character_in_a_config_is_one_line_naming_the_file(tmp_path):
    """PyYAML's reader error has no `problem` (nor line and column): its own text, made one line."""
    path = _write(tmp_path / "ctl.yaml", "SEED: 1\x07\n")
    with pytest.raises(ValueError) as e:
        load_config(path)
    message = _one_line_error(e)
    assert message.startswith(f"config file {path} is not valid YAML: unacceptable character #x0007")
    assert "None" not in message


def test_an_empty_config_file_holds_no_keys(tmp_path):
    """An empty file (or one of comments only) is YAML's null: no keys, the defaults."""
    for text in ("", "# nothing set yet\n"):
        assert load_config(_write(tmp_path / "empty.yaml", text)) == load_config()


@pytest.mark.parametrize("text,got", [("- SEED\n- 1\n", "list"), ("resnet18\n", "str")])
def test_a_config_that_is_not_a_mapping_names_the_file(tmp_path, text, got):
    path = _write(tmp_path / "list.yaml", text)
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert _one_line_error(e) == f"config file {path} must hold a mapping of keys, got {got}"


def test_a_missing_relative_config_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A relative path is read from the current directory, which the message names (spcl/utils/io.py
    where_read): a tool run from another folder than the user thinks."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        load_config(os.path.join("configs", "nope.yaml"))
    assert _one_line_error(e) == (f"config file not found: {os.path.join('configs', 'nope.yaml')}, read relative to "
                                  f"the current directory {os.getcwd()}")


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"SEED: 1\n\xff\xfe\n")
    with pytest.raises(ValueError) as e:
        load_config(str(path))
    assert _one_line_error(e).startswith(f"config file {path} is not UTF-8 text")


@pytest.mark.parametrize("files,start,chain", [
    ({"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: a.yaml\n"}, "a.yaml", ["a.yaml", "b.yaml", "a.yaml"]),
    ({"self.yaml": "_BASE_: [../d/self.yaml]\nSEED: 1\n"}, "self.yaml", ["self.yaml", "../d/self.yaml"]),
    ({"top.yaml": "_BASE_: mid.yaml\n", "mid.yaml": "_BASE_: [leaf.yaml, top.yaml]\n", "leaf.yaml": "SEED: 2\n"},
     "top.yaml", ["top.yaml", "mid.yaml", "top.yaml"]),
])
def test_a_base_cycle_names_the_chain(tmp_path, files, start, chain):
    (tmp_path / "d").mkdir()
    for name, text in files.items():
        _write(tmp_path / "d" / name, text)
    top = str(tmp_path / "d" / start)
    with pytest.raises(ValueError) as e:
        load_config(top)
    message = _one_line_error(e)
    shown = [top] + [os.path.join(str(tmp_path / "d"), name) for name in chain[1:]]
    assert message.startswith("_BASE_ cycle: " + " -> ".join(shown) + ";"), message


def test_a_base_shared_by_two_bases_is_no_cycle(tmp_path):
    _write(tmp_path / "common.yaml", "SEED: 4\nOUTPUT_DIR: common\n")
    _write(tmp_path / "left.yaml", "_BASE_: common.yaml\nMODEL:\n  BACKBONE: vgg16\n")
    _write(tmp_path / "right.yaml", "_BASE_: common.yaml\nSEED: 5\n")
    cfg = load_config(_write(tmp_path / "top.yaml", "_BASE_: [left.yaml, right.yaml]\n"))
    assert (cfg.SEED, cfg.OUTPUT_DIR, cfg.MODEL.BACKBONE) == (5, "common", "vgg16")


@pytest.mark.parametrize("text,got", [
    ("_BASE_: 5\n", "got 5"),
    ("_BASE_:\n", "got an empty value"),
    ("_BASE_: {a: b.yaml}\n", "got {'a': 'b.yaml'}"),
    ("_BASE_:\n  - ok.yaml\n  -\n", "got an empty entry (entry 2 of ['ok.yaml', None])"),
    ("_BASE_: [ok.yaml, '']\n", "got an empty entry (entry 2 of ['ok.yaml', ''])"),
    ("_BASE_: [ok.yaml, 7]\n", "got 7 (entry 2 of ['ok.yaml', 7])"),
])
def test_a_base_that_is_not_a_path_names_the_file_and_what_was_expected(tmp_path, text, got):
    _write(tmp_path / "ok.yaml", "SEED: 1\n")
    path = _write(tmp_path / "x.yaml", text)
    with pytest.raises(ValueError) as e:
        load_config(path)
    assert _one_line_error(e) == f"_BASE_ in {path}: expected a path or a list of paths, relative to that file, {got}"


def test_an_empty_base_list_inherits_nothing(tmp_path):
    assert load_config(_write(tmp_path / "x.yaml", "_BASE_: []\nSEED: 6\n")).SEED == 6


def test_a_missing_base_names_the_file_whose_base_names_it(tmp_path):
    (tmp_path / "sub").mkdir()
    middle = _write(tmp_path / "sub" / "middle.yaml", "_BASE_: gone.yaml\n")
    top = _write(tmp_path / "top.yaml", "_BASE_: sub/middle.yaml\n")
    with pytest.raises(FileNotFoundError) as e:
        load_config(top)
    gone = tmp_path / "sub" / "gone.yaml"
    assert _one_line_error(e) == f"config file not found: {gone} (named by _BASE_ in {middle})"


# ------------------------------------------------------------------------------------------------ SEED range ---

@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**64), str(2**32), "-1"])
def test_a_seed_out_of_range_is_refused_when_the_config_loads(seed):
    """Beyond 2**64 - 1 torch.manual_seed fails with "Overflow when unpacking long long" (no key named) after the
    run folder is written; beyond 2**32 - 1 numpy's legacy seed and scikit-learn's random_state do; a negative
    seed seeds python's random as its absolute value."""
    with pytest.raises(ValueError) as e:
        load_config("", ["SEED", seed])
    assert _one_line_error(e) == (f"config key SEED = {seed}; expected an integer from 0 to 2**32 - 1 = 4294967295 "
                                  "(numpy's seed range)")


@pytest.mark.parametrize("key", ["DATASETS.TOY.SEED", "DATASETS.TOY.NUM_SOURCE", "DATASETS.TOY.NUM_TARGET_TRAIN",
                                 "DATASETS.TOY.NUM_TARGET_VAL"])
def test_a_negative_toy_seed_or_count_names_its_key(key):
    """The toy writer refused these only when it ran, naming no key ("seed and counts must be non-negative")."""
    with pytest.raises(ValueError) as e:
        load_config("", [key, "-3"])
    assert _one_line_error(e) == f"config key {key} = -3; expected an integer >= 0"
    assert load_config("", [key, "0"]).DATASETS.TOY[key.split(".")[-1]] == 0


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1])
def test_every_seed_in_range_seeds_python_numpy_and_torch(seed):
    from spcl.utils.env import seed_all

    assert load_config("", ["SEED", str(seed)]).SEED == seed
    seed_all(seed)  # raises for a seed outside what torch, numpy and random take
    import numpy as np

    np.random.RandomState(seed)  # what scikit-learn's random_state (t-SNE in tools/analyze.py) builds
