"""Config loading: fresh defaults, YAML files with `_BASE_` inheritance, `KEY VALUE` overrides.

Called by every tool (`tools/*.py`) and by tests. `get_cfg()` returns a `CfgNode` (a yacs `CfgNode`
whose `merge_from_file` follows `_BASE_` like detectron2's and whose `merge_from_list` checks keys).
An unknown key raises a `KeyError` that names the key, where it came from (the file, or the command
line) and the closest existing keys ("did you mean 'ALIGN.BASE_LR'?"). A value of the wrong type, or one
left empty (YAML's `KEY:`, read as None), raises a one-line `ValueError` naming the key, the value, what
is expected and where it came from.
"""
from __future__ import annotations

import difflib
import os
from typing import Iterator, Sequence

import yaml
from yacs.config import CfgNode as CN
from yacs.config import _check_and_coerce_cfg_value_type  # yacs's own type rule, so that the checks agree

from .defaults import _C
from ..utils.io import atomic_write, where_read
from ..utils.signals import signal_numbers

BASE_KEY = "_BASE_"


class ConfigKeyError(KeyError):
    """A `KeyError` for a key the config tree does not have; prints its message without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CfgNode(CN):
    """yacs `CfgNode` whose file and list merges are this module's: `_BASE_` chains (paths relative
    to the file that names them) and unknown keys reported with the file and a close match."""

    def merge_from_file(self, cfg_filename: str) -> "CfgNode":
        return merge_from_file(self, cfg_filename)

    def merge_from_list(self, cfg_list: Sequence[str]) -> "CfgNode":
        return merge_from_list(self, cfg_list)


def get_cfg() -> CfgNode:
    """A fresh, unfrozen copy of the documented defaults (`spcl/config/defaults.py`)."""
    return CfgNode(_C)  # converts every nested node; deep-copies the values


def _full_keys(node: CN, prefix: str = "") -> Iterator[str]:
    """Every full key name of the tree, sections included: 'ALIGN', 'ALIGN.BASE_LR', …"""
    for key, value in node.items():
        yield prefix + key
        if isinstance(value, CN):
            yield from _full_keys(value, prefix + key + ".")


def _suggestions(full_key: str, root: CN, section: bool = False) -> list[str]:
    """The existing keys a mistyped `full_key` most likely meant, best first; [] when none is close.

    In order: the key in upper case ('model.backbone'); its last part, exactly, under other sections
    ('SOLVER.BASE_LR' → every stage's BASE_LR), after a key of its own section that is nearly the same
    ('MODEL.WEIGHT' → 'MODEL.WEIGHTS', then 'LOSS.CONTRAST.WEIGHT'); a close key of its own section
    ('ALIGN.BASE_LRR'); a close last part under other sections ('SOLVER.BASE_LRR'); else the closest full key
    ('SOLVR.AMP')."""
    key = str(full_key).upper()
    keys = [k for k in _full_keys(root) if (not section or isinstance(_get(root, k), CN))  # sections hold sections
            and not key.startswith(k + ".")]  # nor is a key's own section what it meant

    if key in keys:
        return [key]
    parent, _, leaf = key.rpartition(".")
    split = {k: k.rpartition(".") for k in keys}  # key → (its section, ".", its last part)
    same_leaf = [k for k in keys if split[k][2] == leaf]
    siblings = {split[k][2]: k for k in keys if split[k][0] == parent}
    if same_leaf:  # a sibling one letter off ('MODEL.WEIGHT' → 'MODEL.WEIGHTS') is still the likelier
        twin = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.85)
        return [siblings[t] for t in twin] + _nearest_sections(same_leaf, parent, split)
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.75)
    if close:
        return [siblings[close[0]]]
    close = difflib.get_close_matches(leaf, sorted({split[k][2] for k in keys}), n=1, cutoff=0.75)
    if close:
        return _nearest_sections([k for k in keys if split[k][2] == close[0]], parent, split)
    return difflib.get_close_matches(key, keys, n=1, cutoff=0.6)


def _nearest_sections(candidates: list[str], parent: str, split: dict) -> list[str]:
    """Of keys sharing a last part, the one whose section is close to `parent` ('ALIGNN'), else all."""
    close = difflib.get_close_matches(parent, [split[k][0] for k in candidates], n=1, cutoff=0.75)
    return [k for k in candidates if split[k][0] == close[0]] if close else candidates


def _unknown_key(full_key: str, where: str, root: CN, section: bool = False) -> ConfigKeyError:
    """The error for an unknown key, with the closest existing key names when some are close: keys of values
    for a key given a value (every key on the command line), sections for one that holds keys in a file."""
    msg = f"unknown config key '{full_key}' {where}"
    close = [_suggested(k, root, section) for k in _suggestions(full_key, root, section)]
    if close:
        msg += "; did you mean " + (close[0] if len(close) == 1 else ", ".join(close[:-1]) + " or " + close[-1]) + "?"
    return ConfigKeyError(msg)


def _suggested(key: str, root: CN, section: bool) -> str:
    """A suggested key as said: quoted; a section suggested for a value as the keys it holds (naming the
    section alone sent the user to "is a section, not a value")."""
    node = _get(root, key)
    if section or not isinstance(node, CN):
        return f"'{key}'"
    inner = [f"{key}.{k}" for k in node]
    return f"a key of section '{key}' ({', '.join(inner[:3])}{', …' if len(inner) > 3 else ''})"


_TYPE_NAMES = {bool: "True or False", int: "an int", float: "a float", str: "a string", list: "a list",
               tuple: "a list"}


def _check_value(full_key: str, value, default, where: str):
    """`value` (as yacs decodes it) as it may replace `default`, an int for a float key made a float
    (`LOSS.CONTRAST.TEMPERATURE 10`, which yacs alone refuses); else a one-line ValueError: None (a
    value left empty in YAML, or `None` on the command line: no key takes None) or another type than
    yacs accepts (it would raise its own "Type mismatch (<class 'int'> vs. <class 'str'>) …")."""
    value = CN._decode_cfg_value(value)
    if type(default) is float and type(value) is int:
        return float(value)
    expected = _TYPE_NAMES.get(type(default), type(default).__name__)
    if value is None:
        hint = '; write "" for the empty string' if isinstance(default, str) else ""
        raise ValueError(f"{full_key}: expected {expected}, got an empty value ({where}){hint}")
    try:
        _check_and_coerce_cfg_value_type(value, default, full_key, full_key)
    except ValueError:
        hint = ""
        if isinstance(default, (list, tuple)) and isinstance(value, str) and value.strip().startswith(("[", "(")):
            hint = f"; a list's names are quoted inside it: \"{_quoted_list(value)}\""  # `[align]` is not a list
        raise ValueError(f"{full_key}: expected {expected}, got {value!r} ({where}){hint}") from None
    return value


def _load_yaml_with_base(path: str, node: CN | None = None, _chain: tuple = ()) -> dict:
    """Read a YAML file, recursively merging the files its `_BASE_` names (relative to it).

    With `node`, each file's own keys are checked against it, so an unknown key names the file that
    holds it (not the file that inherits it). `_chain`: the files whose `_BASE_` led here, outermost
    first. A mistake is one line naming the file: YAML it cannot parse (with line and column), a
    `_BASE_` that is not a path or a list of paths, a base that does not exist (with the file naming
    it) and a cycle of bases (with the chain)."""
    via = f" (named by {BASE_KEY} in {_chain[-1]})" if _chain else ""
    if os.path.isdir(path):  # "not found" would send the user looking for a folder that is there
        yamls = sorted(f for f in os.listdir(path) if f.endswith((".yaml", ".yml")))
        example = f", e.g. {os.path.join(path, yamls[0])}" if yamls else ""
        raise IsADirectoryError(f"config file {path}{via} is a folder: give a YAML file{example}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}{via}{where_read(path)}")
    real = os.path.realpath(path)
    if any(os.path.realpath(p) == real for p in _chain):
        raise ValueError(f"{BASE_KEY} cycle: " + " -> ".join(_chain + (path,)) + "; a config file cannot "
                         "inherit from itself")
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {_yaml_problem(e)}{via}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}){via}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}{via}")
    bases = _bases(data, path)
    if node is not None:
        _check_keys(data, node, "", path, node)
    merged: dict = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _deep_update(merged, _load_yaml_with_base(base_path, node, _chain + (path,)))
    _deep_update(merged, data)
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping: PyYAML keeps the last silently, so a second
    `SOLVER:` section dropped every key of the first."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):  # `? [a, b]`: PyYAML's own construct_mapping refuses an unhashable key
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line {seen[key] + 1}); YAML "
                    "would keep only the last: merge them", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def _bases(data: dict, path: str) -> list[str]:
    """The files `data`'s `_BASE_` names (removed from `data`): one path or a list of paths."""
    if BASE_KEY not in data:
        return []
    bases = data.pop(BASE_KEY)
    expected = "a path or a list of paths, relative to that file"
    if isinstance(bases, str):
        bases = [bases]
    elif not isinstance(bases, list):
        got = "an empty value" if bases is None else repr(bases)
        raise ValueError(f"{BASE_KEY} in {path}: expected {expected}, got {got}")
    for i, base in enumerate(bases):
        if not isinstance(base, str) or not base:
            got = "an empty entry" if base is None or base == "" else repr(base)
            raise ValueError(f"{BASE_KEY} in {path}: expected {expected}, got {got} (entry {i + 1} of {bases!r})")
    return bases


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line from a YAML error: what is wrong, at which line and column (1-based), and the
    construct it was inside (`while parsing a flow sequence started at line 2, column 7`)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if not problem:
        return " ".join(str(e).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else str(problem)
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        text += f" ({context}" + (f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
                                  if context_mark else "") + ")"
    return " ".join(text.split())


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value


def _check_keys(data: dict, node: CN, prefix: str, source: str, root: CN) -> None:
    """Check one file's keys against `node` (unknown keys, sections given values and the reverse) and
    its values' types (`_check_value`). A section left empty (`MODEL:` with every key commented out)
    is read as holding no keys, not as None (which yacs would put in place of the whole section)."""
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in node:
            raise _unknown_key(full, f"in {source}", root, section=isinstance(value, dict))
        if isinstance(node[key], CN):
            if value is None:
                data[key] = value = {}
            if not isinstance(value, dict):
                raise ConfigKeyError(f"config key '{full}' in {source} is a section, not a value")
            _check_keys(value, node[key], full + ".", source, root)
        elif isinstance(value, dict):
            raise ConfigKeyError(f"config key '{full}' in {source} is a value, not a section")
        else:
            data[key] = _check_value(full, value, node[key], f"from {source}")


def merge_from_file(cfg: CN, path: str) -> CN:
    """Merge a YAML file (with `_BASE_` chains) into `cfg`; unknown keys name the file that holds
    them. Also what `get_cfg().merge_from_file(path)` runs."""
    data = _load_yaml_with_base(path, cfg)
    cfg.merge_from_other_cfg(CN(data))
    return cfg


def merge_from_list(cfg: CN, opts: Sequence[str]) -> CN:
    """Merge `KEY VALUE` pairs from the command line; an unknown key is named in the error. Also
    what `get_cfg().merge_from_list(opts)` runs."""
    opts = list(opts)
    split = _split_list(opts)
    if split or len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs: {split or _unpaired(opts)}")
    for key in opts[0::2]:
        node = cfg
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                raise _unknown_key(key, "on the command line", cfg)
            node = node[part]
        if isinstance(node, CN):
            raise ConfigKeyError(f"config key '{key}' on the command line is a section, not a value")
    for i in range(1, len(opts), 2):
        checked = _check_value(opts[i - 1], opts[i], _get(cfg, opts[i - 1]), "from the command line")
        if type(checked) is float:
            opts[i] = repr(checked)  # an int given for a float key: yacs reads it back as that float
    CN.merge_from_list(cfg, opts)  # yacs's own (type checks, literal_eval of the values)
    return cfg


def _unpaired(opts: list) -> str:
    """Which token of an odd list of overrides breaks the pairs, and how to write it: `KEY=VALUE`, or a key
    without its value (a list the shell split at its spaces is `_split_list`'s)."""
    for i in range(0, len(opts), 2):
        token = str(opts[i])
        key, eq, value = token.partition("=")
        if eq and key and "=" not in value:
            return f"'{token}' is one token; write {key} {value} (a space, not =)"
        if i + 1 == len(opts):
            return f"{token} has no value"
    return f"got an odd list: {opts}"


def _split_list(opts: list) -> str:
    """'' unless a value is a list the shell split at its spaces (`PIPELINE.STAGES [align, self_train]` gives
    the tokens `[align,` and `self_train]`): then which, and how to quote it."""
    for i in range(1, len(opts)):
        first = str(opts[i]).strip()
        if first.startswith(("[", "(")) and not first.endswith(("]", ")")):
            end = next((j for j in range(i + 1, len(opts)) if str(opts[j]).rstrip().endswith(("]", ")"))), None)
            if end is not None:
                words = " ".join(map(str, opts[i:end + 1]))
                return (f"the list {words} after {opts[i - 1]} was split at its spaces into {end + 1 - i} tokens; "
                        f"quote it, its names quoted inside: {opts[i - 1]} \"{_quoted_list(words)}\"")
    return ""


def _quoted_list(text: str) -> str:
    """`[align, self_train]` → `['align', 'self_train']`: the items of a list written without quotes, each a
    Python literal (numbers stay numbers), so that yacs reads a list of names."""
    import ast

    try:  # numbers, nested lists included (DATASETS.FOLDER.ID_MAP [[7, 0], [8, 1]]): already Python literals
        value = ast.literal_eval(text.strip())
        if isinstance(value, (list, tuple)):
            return repr(list(value))
    except (ValueError, SyntaxError):
        pass
    items = []
    for item in text.strip().lstrip("[(").split("]")[0].split(")")[0].split(","):
        item = item.strip().strip("'\"")
        if not item:
            continue
        try:
            items.append(repr(ast.literal_eval(item)) if not item.isidentifier() else repr(item))
        except (ValueError, SyntaxError):
            items.append(repr(item))
    return "[" + ", ".join(items) + "]"


def load_config(path: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then the YAML file (if any), then the overrides; returned frozen."""
    cfg = get_cfg()
    if path:
        merge_from_file(cfg, path)
    merge_from_list(cfg, list(opts))
    validate(cfg)
    cfg.freeze()
    return cfg


def validate(cfg: CN) -> None:
    """Check the values whose mistakes would otherwise surface deep inside training."""
    # the names the builders know, from where they are defined (imported here: they import torch, torchvision)
    from ..data.build import CATALOG
    from ..engine.stages import STAGES
    from ..modeling.backbones import BACKBONES

    choices = {
        "MODEL.BACKBONE": BACKBONES,
        "DATASETS.SOURCE": CATALOG,
        "DATASETS.TARGET": CATALOG,
        "DATASETS.TEST": CATALOG,
        "PROTOTYPE.ABSENT": ("keep", "decay"),
        "PROTOTYPE.INIT": ("pixel_mean", "image_mean"),
        "PROTOTYPE.SOURCE_MASK": ("gt", "gt_and_pred"),
        "ALIGN.TARGET_MASK": ("offline", "online"),
        "PIPELINE.HANDOFF": ("last", "best"),
        "MODEL.BN_RUNNING_STATS": ("target", "all"),
        "PSEUDO.ORACLE": ("", "kept", "all"),
        "SOLVER.AMP": ("", "bf16", "fp16"),
        "SOLVER.OPTIMIZER": ("sgd", "adamw"),
    }
    for key, allowed in choices.items():
        section, name = key.split(".")
        if cfg[section][name] not in allowed:
            raise ValueError(f"config key {key} = {cfg[section][name]!r}; expected one of {allowed}")
    if cfg.MODEL.NUM_CLASSES not in (16, 19):
        raise ValueError(f"config key MODEL.NUM_CLASSES = {cfg.MODEL.NUM_CLASSES}; expected 16 or 19")
    unknown = [stage for stage in cfg.PIPELINE.STAGES if stage not in STAGES]
    if unknown:
        raise ValueError(f"config key PIPELINE.STAGES = {list(cfg.PIPELINE.STAGES)!r}; {unknown[0]!r} is no stage: "
                         f"expected each one of {tuple(STAGES)}")
    _check_id_map(cfg.DATASETS.FOLDER.ID_MAP, cfg.MODEL.NUM_CLASSES)
    for keys, ok, expected in _VALUE_RULES:
        for key in keys:
            value = _get(cfg, key)
            if not ok(value):
                raise ValueError(f"config key {key} = {value!r}; expected {expected}")
    for stage in _STAGES:  # the trainer would clamp it to the horizon: a run shorter than the config says
        stop, horizon = cfg[stage].STOP_ITER, cfg[stage].MAX_ITER
        if stop > horizon:
            raise ValueError(f"config key {stage}.STOP_ITER = {stop!r}; expected at most "
                             f"{stage}.MAX_ITER = {horizon!r} (the poly horizon, where the learning rate reaches 0)")
    if any(s > w for s, w in zip(cfg.TEST.STRIDE, cfg.TEST.WINDOW)):  # checked here, not at the first evaluation
        raise ValueError(f"config key TEST.STRIDE = {list(cfg.TEST.STRIDE)!r}; expected at most TEST.WINDOW = "
                         f"{list(cfg.TEST.WINDOW)!r} in each of (W, H): pixels between sliding windows would never "
                         "be predicted")
    try:
        signal_numbers(cfg.SOLVER.STOP_SIGNALS)
    except ValueError as e:
        raise ValueError(f"config key SOLVER.STOP_SIGNALS = {list(cfg.SOLVER.STOP_SIGNALS)!r}: {e}") from None


def _check_id_map(pairs, num_classes: int) -> None:
    """DATASETS.FOLDER.ID_MAP: what `id_map_lut` accepts, and train ids the labels of this run may hold."""
    from ..data.datasets.folder import check_id_pairs

    check_id_pairs(pairs, num_classes)


def _get(cfg: CN, key: str):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def _numbers(v, n: int = 0, positive: bool = False, integer: bool = False, non_negative: bool = False) -> bool:
    """A list of numbers (exactly n of them when n > 0, at least one otherwise) with the given signs."""
    return (isinstance(v, (list, tuple)) and (len(v) == n if n else len(v) > 0)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and (not integer or all(isinstance(x, int) for x in v))
            and (not positive or all(x > 0 for x in v)) and (not non_negative or all(x >= 0 for x in v)))


_STAGES = ("SOURCE_ONLY", "ADV_WARMUP", "ALIGN", "SELF_TRAIN")
# Values whose mistakes would otherwise end in a traceback far from the config (an IndexError in a
# transform, a modulo by zero in the trainer) or in a silently wrong run (a negative temperature).
_VALUE_RULES = (
    # "" would be the current directory to some writers and no folder at all to os.makedirs
    (("OUTPUT_DIR",), lambda v: bool(v.strip()), "a folder for the outputs, e.g. output/toy"),
    # python's random.seed(-s) is random.seed(s), numpy's legacy seed and scikit-learn's random_state (t-SNE
    # in tools/analyze.py) take 0 … 2**32 - 1, and torch.manual_seed fails beyond 2**64 - 1 ("Overflow when
    # unpacking long long"), after the run folder is written
    (("SEED",), lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1 = 4294967295 (numpy's seed range)"),
    # the toy writer seeds default_rng([seed, domain, split, i]), which refuses a negative entry
    (("DATASETS.TOY.SEED", "DATASETS.TOY.NUM_SOURCE", "DATASETS.TOY.NUM_TARGET_TRAIN", "DATASETS.TOY.NUM_TARGET_VAL"),
     lambda v: v >= 0, "an integer >= 0"),
    (("INPUT.SOURCE_SIZE", "INPUT.TARGET_SIZE", "INPUT.TEST_SIZE", "INPUT.SELF_TRAIN_BASE_SIZE",
      "INPUT.SELF_TRAIN_CROP", "DATASETS.TOY.SIZE", "TEST.WINDOW", "TEST.STRIDE"),
     lambda v: _numbers(v, 2, positive=True, integer=True), "two positive integers [W, H]"),
    (("INPUT.SELF_TRAIN_SCALE",), lambda v: _numbers(v, 2, positive=True) and v[0] <= v[1],
     "two factors [min, max] with 0 < min <= max"),
    (("INPUT.COLOR_JITTER",), lambda v: _numbers(v, 4, non_negative=True) and v[3] <= 0.5,
     "four strengths >= 0 [brightness, contrast, saturation, hue], hue at most 0.5 (torchvision's range)"),
    (("INPUT.FLIP_PROB", "INPUT.SELF_TRAIN_FLIP_PROB"), lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    (("INPUT.PIXEL_MEAN",), lambda v: _numbers(v, 3), "three numbers (R, G, B)"),
    (("INPUT.PIXEL_STD",), lambda v: _numbers(v, 3, positive=True), "three positive numbers (R, G, B)"),
    (("MODEL.ASPP_DILATIONS",), lambda v: _numbers(v, positive=True, integer=True),
     "one or more positive integers"),
    (("MODEL.HEAD_INIT_STD",), lambda v: v > 0, "a positive standard deviation (ASPP weights ~ N(0, std))"),
    (("MODEL.DISC_CHANNELS",), lambda v: v >= 1, "at least 1 (the discriminator's first width)"),
    (("DATASETS.CLASS_BALANCE_BLOCK",), lambda v: v >= 1, "at least 1 (draws per block of the class counter)"),
    (("TEST.SCALES",), lambda v: _numbers(v, positive=True), "one or more positive factors of INPUT.TEST_SIZE"),
    (("SOLVER.LOG_PERIOD",), lambda v: v >= 1, "at least 1 (iterations between log lines)"),
    (("SOLVER.ACCUM_STEPS", "TEST.BATCH_SIZE", "DATALOADER.PREFETCH_FACTOR"), lambda v: v >= 1, "at least 1"),
    (("PSEUDO.NUM_BINS",), lambda v: 1 <= v <= 65536, "between 1 and 65,536 histogram bins"),
    (("PROTOTYPE.NUM_IMAGES", "TEST.NUM_IMAGES", "DATALOADER.NUM_WORKERS"), lambda v: v >= 0,
     "0 (all images / no worker processes) or a positive number"),
    (("SOLVER.LR_POWER",), lambda v: v >= 0, "a poly exponent >= 0"),
    (("SOLVER.MOMENTUM",), lambda v: 0 <= v < 1, "a value in [0, 1) (SGD momentum, or AdamW's beta1)"),
    (("SOLVER.WEIGHT_DECAY",), lambda v: v >= 0, "a weight decay >= 0"),
    (("SOLVER.HEAD_LR_FACTOR",), lambda v: v >= 0, "a learning-rate factor >= 0"),
    (("SOLVER.CHECKPOINT_PERIOD", "SOLVER.EVAL_PERIOD", "SOLVER.KEEP_CHECKPOINTS"), lambda v: v >= 0,
     "0 (off, or keep all) or a positive number"),
    (("LOSS.SOURCE_TEMPERATURE", "LOSS.CONTRAST.TEMPERATURE"), lambda v: v > 0, "a positive temperature"),
    (("PSEUDO.THRESHOLD_CAP",), lambda v: 0 < v <= 1, "a confidence in (0, 1]"),
    (("PROTOTYPE.ALPHA",), lambda v: 0 <= v <= 1, "an EMA weight in [0, 1]"),
    (tuple(f"{s}.BASE_LR" for s in _STAGES) + ("ADV_WARMUP.DISC_LR",), lambda v: v >= 0, "a learning rate >= 0"),
    (tuple(f"{s}.MAX_ITER" for s in _STAGES), lambda v: v >= 1, "at least 1 (the poly horizon)"),
    (tuple(f"{s}.STOP_ITER" for s in _STAGES), lambda v: v >= 1,
     "at least 1 (the iteration the stage stops at, at most its MAX_ITER)"),
    (("ADV_WARMUP.DISC_BETAS",), lambda v: _numbers(v, 2, non_negative=True) and all(x < 1 for x in v),
     "two Adam betas [beta1, beta2], each in [0, 1)"),
    (("ADV_WARMUP.ADV_WEIGHT", "LOSS.CONTRAST.WEIGHT"), lambda v: v >= 0, "a loss weight >= 0"),
    (("SOURCE_ONLY.SOURCE_BATCH", "ADV_WARMUP.SOURCE_BATCH", "ADV_WARMUP.TARGET_BATCH", "ALIGN.SOURCE_BATCH",
      "ALIGN.TARGET_BATCH", "SELF_TRAIN.TARGET_BATCH"), lambda v: v >= 1, "a global batch of at least 1"),
)


def dump_config(cfg: CN, output_dir: str, name: str = "config.yaml") -> str:
    """Write the merged config into `output_dir` (created) atomically, and return the file path. A run's
    config.yaml is what a rerun is checked against: a write cut short (killed, disk full) must leave no
    partial file there, which would read as a changed config."""
    path = os.path.join(output_dir, name)
    text = cfg.dump()
    atomic_write(path, lambda f: f.write(text), binary=False, what="config")
    return path
