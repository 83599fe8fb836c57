"""Config loading: fresh defaults, YAML files with `_BASE_` inheritance, `KEY VALUE` overrides.

Called by every tool (`tools/*.py`) and by tests. Unknown keys raise a `KeyError` that names the key
and the file it came from.
"""
from __future__ import annotations

import os
from typing import Sequence

import yaml
from yacs.config import CfgNode as CN

from .defaults import _C

BASE_KEY = "_BASE_"


def get_cfg() -> CN:
    """A fresh, unfrozen copy of the documented defaults (`spcl/config/defaults.py`)."""
    return _C.clone()


def _load_yaml_with_base(path: str, node: CN | None = None) -> dict:
    """Read a YAML file, recursively merging the files its `_BASE_` names (relative to it).

    With `node`, each file's own keys are checked against it, so an unknown key names the file that
    holds it (not the file that inherits it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    if node is not None:
        _check_keys(data, node, "", path)
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _deep_update(merged, _load_yaml_with_base(base_path, node))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value


def _check_keys(data: dict, node: CN, prefix: str, source: str) -> None:
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in node:
            raise KeyError(f"unknown config key '{full}' in {source}")
        if isinstance(value, dict):
            if not isinstance(node[key], CN):
                raise KeyError(f"config key '{full}' in {source} is a value, not a section")
            _check_keys(value, node[key], full + ".", source)


def merge_from_file(cfg: CN, path: str) -> CN:
    """Merge a YAML file (with `_BASE_` chains) into `cfg`; unknown keys name the file."""
    data = _load_yaml_with_base(path, cfg)
    cfg.merge_from_other_cfg(CN(data))
    return cfg


def merge_from_list(cfg: CN, opts: Sequence[str]) -> CN:
    """Merge `KEY VALUE` pairs from the command line; an unknown key is named in the error."""
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got an odd list: {list(opts)}")
    for key in opts[0::2]:
        node = cfg
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                raise KeyError(f"unknown config key '{key}' on the command line")
            node = node[part]
    cfg.merge_from_list(list(opts))
    return cfg


def load_config(path: str = "", opts: Sequence[str] = ()) -> CN:
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
    choices = {
        "PROTOTYPE.ABSENT": ("keep", "decay"),
        "PROTOTYPE.INIT": ("pixel_mean", "image_mean"),
        "PROTOTYPE.SOURCE_MASK": ("gt", "gt_and_pred"),
        "ALIGN.TARGET_MASK": ("offline", "online"),
        "PIPELINE.HANDOFF": ("last", "best"),
        "SOLVER.AMP": ("", "bf16", "fp16"),
    }
    for key, allowed in choices.items():
        section, name = key.split(".")
        if cfg[section][name] not in allowed:
            raise ValueError(f"config key {key} = {cfg[section][name]!r}; expected one of {allowed}")
    if cfg.MODEL.NUM_CLASSES not in (16, 19):
        raise ValueError(f"config key MODEL.NUM_CLASSES = {cfg.MODEL.NUM_CLASSES}; expected 16 or 19")


def dump_config(cfg: CN, output_dir: str, name: str = "config.yaml") -> str:
    """Write the merged config into `output_dir` (created) and return the file path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path
