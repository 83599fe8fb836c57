"""Every YAML under configs/ loads; the five paper configs hold the numbers of SPEC §6; every
`KEY VALUE` in scripts/*.sh names a real key of the config file the script passes."""
from __future__ import annotations

import glob
import itertools
import os
import re
import shlex

import pytest

from spcl.config import get_cfg, load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs")
SCRIPT_DIR = os.path.join(REPO, "scripts")

ALL_CONFIGS = sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)
    if "_base_" not in os.path.relpath(p, CONFIG_DIR).split(os.sep))


def test_configs_found():
    assert len(ALL_CONFIGS) >= 5, ALL_CONFIGS


@pytest.mark.parametrize("rel", ALL_CONFIGS)
def test_every_config_loads(rel):
    cfg = load_config(os.path.join(REPO, rel))
    assert cfg.is_frozen()
    assert cfg.MODEL.NUM_CLASSES in (16, 19)


# ---------------------------------------------------------------------------- paper numbers ---
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
    # model (SPEC §2)
    assert cfg.MODEL.BACKBONE == backbone
    assert cfg.MODEL.NUM_CLASSES == num_classes
    assert cfg.MODEL.ASPP_DILATIONS == [6, 12, 18, 24]
    assert cfg.MODEL.HEAD_INIT_STD == 0.01
    expected_weights = {"resnet101": "resnet101-", "vgg16": "vgg16-"}[backbone]
    assert os.path.basename(cfg.MODEL.WEIGHTS).startswith(expected_weights)
    if backbone == "resnet101":
        assert cfg.MODEL.FREEZE_BN is True
    # data (SPEC §6-7)
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
    # schedules (SPEC §6)
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
    # losses, prototypes, thresholds (SPEC §3-6)
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
    assert cfg.OUTPUT_DIR.endswith(name)


# ----------------------------------------------------------------------------------- scripts ---
KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")
OPERATORS = {";", "&&", "||", "|", "&", ">", ">>", "<", "2>", ">&", "2>&1", "|&", "(", ")", ";;"}
VAR_RE = re.compile(r"\$\{(\w+)(?::?[-=]([^}]*))?\}|\$(\w+)")
ASSIGN_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$")


def _logical_lines(text: str) -> list[str]:
    """Lines of a shell script with `\\` continuations joined."""
    return re.sub(r"\\\r?\n", " ", text).splitlines()


def _split_words(line: str) -> list[str]:
    line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # `2>&1`, `1>log`: drop the descriptor number
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _expand(word: str, variables: dict) -> str:
    """Expand $VAR / ${VAR} / ${VAR:-default} with the script's own simple assignments."""
    def sub(m):
        name = m.group(1) or m.group(3)
        if name in variables:
            return variables[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)
    return VAR_RE.sub(sub, word)


def parse_tool_calls(text: str, tool: str = "train.py") -> list[dict]:
    """Each call of tools/<tool> in a shell script: {"config", "stage", "opts", "options", "line"}.

    Handles `python` / `torchrun` / `python -m torch.distributed.run` prefixes, `\\` continuations,
    comments, quoting, `;`/`&&`/pipes/redirections after the call, options of the tool (`--flag`,
    `--opt VALUE`, `--opt=VALUE`) in front of the `KEY VALUE` list, pass-through `"$@"` (dropped),
    and shell variables: simple
    assignments (`OUT=…`, `${OUT:-default}`) are expanded, and a call inside `for V in a b; do` is
    checked once per value of V. Values that still hold a `$` are kept as opaque strings.
    """
    variables: dict = {}
    loops: dict = {}
    calls = []
    for lineno, line in enumerate(_logical_lines(text), 1):
        m = ASSIGN_RE.match(line)
        if m and " " not in m.group(2).strip().strip("\"'"):
            words = _split_words(m.group(2)) or [""]
            variables[m.group(1)] = _expand(words[0], variables)
            continue
        words = _split_words(line)
        if len(words) >= 3 and words[0] == "for" and words[2] == "in":
            values = []
            for w in words[3:]:
                if w in (";", "do"):
                    break
                values.append(_expand(w, variables))
            loops[words[1]] = values
        for i, w in enumerate(words):
            if os.path.basename(w) == tool and "tools" in w.replace("\\", "/").split("/"):
                break
        else:
            continue
        args = []
        for w in words[i + 1:]:
            if w in OPERATORS or set(w) <= set(";&|<>()"):
                break
            args.append(w)
        options, opts, j = {}, [], 0
        while j < len(args):
            a = args[j]
            if a == "--":
                j += 1
                continue
            if a.startswith("--"):
                name, eq, val = a[2:].partition("=")
                if eq:
                    options[name] = val
                    j += 1
                    continue
                vals = []
                j += 1
                while j < len(args) and not args[j].startswith("--") and not KEY_RE.match(args[j]):
                    vals.append(args[j])
                    j += 1
                options[name] = vals[0] if len(vals) == 1 else vals
                continue
            # the script's own arguments passed through ("$@") are the user's: not checked here
            opts = [a for a in args[j:] if a not in ("$@", "$*", "${@}", "${*}")]
            break
        raw = [str(options.get("config", "") or ""), str(options.get("stage", "") or "")] + opts
        used = [n for n in loops if any(re.search(r"\$\{?%s\b" % n, r) for r in raw)]
        for combo in itertools.product(*[loops[n] for n in used]):
            env = {**variables, **dict(zip(used, combo))}
            config, stage, *expanded = [_expand(r, env) for r in raw]
            calls.append({"config": config, "stage": stage, "opts": expanded, "options": options,
                          "line": lineno})
    return calls


def _dummy_for(key: str, value: str) -> str:
    """`value` itself, or (when it holds an unexpanded shell variable) a string of the key's default."""
    if "$" not in value:
        return value
    node = get_cfg()
    for part in key.split("."):
        if part not in node:
            return value  # an unknown key: load_config will name it
        node = node[part]
    return value if isinstance(node, str) else repr(node)


def check_call(call: dict, source: str) -> None:
    cfg_file = call["config"]
    assert cfg_file, f"{source}:{call['line']}: no --config"
    assert "$" not in cfg_file, f"{source}:{call['line']}: cannot resolve the config path {cfg_file!r}"
    path = cfg_file if os.path.isabs(cfg_file) else os.path.join(REPO, cfg_file)
    assert os.path.isfile(path), f"{source}:{call['line']}: config file {cfg_file} does not exist"
    opts = call["opts"]
    assert len(opts) % 2 == 0, f"{source}:{call['line']}: odd KEY VALUE list {opts}"
    pairs = []
    for key, value in zip(opts[0::2], opts[1::2]):
        assert KEY_RE.match(key), f"{source}:{call['line']}: {key!r} is not a config key"
        pairs += [key, _dummy_for(key, value)]
    try:
        cfg = load_config(path, pairs)
    except (KeyError, ValueError) as e:
        raise AssertionError(f"{source}:{call['line']}: {e}") from e
    from spcl.engine import STAGES as stages

    bad = [s for s in cfg.PIPELINE.STAGES if s not in stages]
    assert not bad, f"{source}:{call['line']}: unknown PIPELINE.STAGES {bad}"
    if call["stage"]:
        assert call["stage"] in stages or "$" in call["stage"], f"{source}: unknown stage {call['stage']}"


SCRIPTS = sorted(glob.glob(os.path.join(SCRIPT_DIR, "**", "*.sh"), recursive=True))


@pytest.mark.skipif(not SCRIPTS, reason="scripts/ holds no .sh file yet")
@pytest.mark.parametrize("script", [os.path.relpath(s, REPO) for s in SCRIPTS])
def test_scripts_pass_real_keys(script):
    with open(os.path.join(REPO, script)) as f:
        text = f.read()
    calls = []
    for tool in ("train.py", "test.py", "gen_pseudo.py", "prepare_data.py"):
        calls += [c for c in parse_tool_calls(text, tool) if tool == "train.py" or c["config"]]
    assert calls or "tools/" not in text, f"{script}: calls a tool but none was parsed"
    for call in calls:
        check_call(call, script)


SAMPLE = r"""#!/usr/bin/env bash
set -euo pipefail
# a comment mentioning tools/train.py --config configs/nope.yaml BAD.KEY 1
OUT=${OUT:-output/gta5_r101}
CFG=configs/gta5_r101.yaml
NGPU=4
torchrun --nproc_per_node=$NGPU tools/train.py --config $CFG \
    OUTPUT_DIR "$OUT" \
    SOLVER.AMP bf16 "$@" \
    INPUT.TEST_SIZE "[1024, 512]"   # trailing comment
python tools/train.py --config configs/gta5_r101.yaml --stage align OUTPUT_DIR ${OUT}/x \
  ALIGN.STOP_ITER $ITERS 2>&1 | tee log.txt
python tools/train.py --config configs/synthia_r101.yaml SEED 2 >log.txt
python -m torch.distributed.run --nproc_per_node 2 tools/train.py --config=configs/gta5_vgg16.yaml && echo done
for EXP in gta5_r101 synthia_vgg16; do
  python tools/train.py --config configs/${EXP}.yaml OUTPUT_DIR output/$EXP; done
python tools/test.py --config configs/gta5_r101.yaml --checkpoint $OUT/final.pth --scales 0.75 1.0 --flip \
    TEST.NUM_IMAGES 10
"""


def test_script_parser_on_a_sample():
    calls = parse_tool_calls(SAMPLE, "train.py")
    assert len(calls) == 6
    a, b, d, c, e1, e2 = calls
    assert (e1["config"], e1["opts"]) == ("configs/gta5_r101.yaml", ["OUTPUT_DIR", "output/gta5_r101"])
    assert (e2["config"], e2["opts"]) == ("configs/synthia_vgg16.yaml", ["OUTPUT_DIR", "output/synthia_vgg16"])
    assert d["opts"] == ["SEED", "2"]
    assert a["config"] == "configs/gta5_r101.yaml" and a["stage"] == ""
    assert a["opts"] == ["OUTPUT_DIR", "output/gta5_r101", "SOLVER.AMP", "bf16", "INPUT.TEST_SIZE", "[1024, 512]"]
    assert b["stage"] == "align"
    assert b["opts"] == ["OUTPUT_DIR", "output/gta5_r101/x", "ALIGN.STOP_ITER", "$ITERS"]
    assert c["config"] == "configs/gta5_vgg16.yaml" and c["opts"] == []
    assert _dummy_for("ALIGN.STOP_ITER", "$ITERS") == "40000"
    assert _dummy_for("OUTPUT_DIR", "$X/y") == "$X/y"
    for call in calls:
        check_call(call, "sample")
    (t,) = parse_tool_calls(SAMPLE, "test.py")
    assert t["options"]["scales"] == ["0.75", "1.0"] and t["options"]["flip"] == []
    assert t["opts"] == ["TEST.NUM_IMAGES", "10"]
    check_call(t, "sample")


@pytest.mark.parametrize("bad,match", [
    ("python tools/train.py --config configs/gta5_r101.yaml SOLVER.AMPP bf16\n", "SOLVER.AMPP"),
    ("python tools/train.py --config configs/missing.yaml\n", "does not exist"),
    ("python tools/train.py --config configs/gta5_r101.yaml SEED\n", "odd"),
    ("python tools/train.py --config configs/gta5_r101.yaml PIPELINE.STAGES \"['warmup']\"\n", "warmup"),
    ("python tools/train.py --config configs/gta5_r101.yaml --stage algin\n", "algin"),
    ("python tools/train.py --config configs/gta5_r101.yaml SOLVER.AMP fp8\n", "SOLVER.AMP"),
    ("python tools/train.py --config configs/gta5_r101.yaml \\\n  ALIGN.NOPE $X\n", "ALIGN.NOPE"),
])
def test_script_checker_catches_mistakes(bad, match):
    (call,) = parse_tool_calls(bad)
    with pytest.raises(AssertionError, match=re.escape(match)):
        check_call(call, "bad.sh")
