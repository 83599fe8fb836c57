"""Config drift: the keys on which the config of a rerun differs from the one a run folder (or a
checkpoint) was made with. Used by the pipeline (finished stages) and the trainer (resume), which
stop unless PIPELINE.ALLOW_CONFIG_CHANGE is set."""
from __future__ import annotations

import os
from typing import Iterator

import yaml
from yacs.config import CfgNode as CN

# Keys that cannot change what a stage computes: they may differ on resume.
SAFE_KEYS = ("OUTPUT_DIR", "SOLVER.LOG_PERIOD", "SOLVER.EVAL_PERIOD", "SOLVER.CHECKPOINT_PERIOD",
             "SOLVER.KEEP_CHECKPOINTS", "SOLVER.STOP_SIGNALS", "DATASETS.DATA_DIR", "DATASETS.FOLDER.TRAIN_DIR",
             "DATASETS.FOLDER.VAL_DIR", "DATASETS.FOLDER.VAL_LABEL_DIR", "DATASETS.PREFLIGHT",
             "PIPELINE.ALLOW_CONFIG_CHANGE")
SAFE_SECTIONS = ("TEST.", "DATALOADER.")  # evaluation options; workers, pinning, prefetch (never the data)
# Hand-off paths, set by the pipeline under OUTPUT_DIR: a path inside the run folder is compared relative
# to it (a moved or copied run folder is the same run); one outside it (initial weights) as an absolute path.
RUN_PATHS = ("MODEL.WEIGHTS", "PROTOTYPE.PATH", "DATASETS.PSEUDO_DIR")
# Keys added to spcl after runs had been made with it, each with the value at which it does what the versions
# before it did: a recorded config without the key is that value (a run folder made before the key was added
# reruns and resumes as before). A key whose default changed what a stage computes does not belong here.
ADDED_KEYS = {"SOLVER.FUSED_OPTIMIZER": False}


class ConfigDriftError(ValueError):
    """A rerun's config differs from the one the run folder was made with."""


class _Absent:
    """The value of a key one of the two configs lacks (unlike a recorded None)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def flatten(node, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _normalise(value):
    """`value` with every tuple, nested ones included, made a list: a YAML file holds lists where the
    command line's literals (`[(7, 0), (8, 1)]`) hold tuples."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _run_path(value: str, output_dir: str) -> str:
    """Where a RUN_PATHS value points: relative to `output_dir` when inside it (`0_align/…`, or "."), else
    the absolute path (`/…`, which no relative one equals)."""
    root, path = os.path.abspath(output_dir or "."), os.path.abspath(value)
    return os.path.relpath(path, root) if os.path.commonpath([root, path]) == root else path


def _same(key: str, a, b, old_root: str, new_root: str) -> bool:
    """Whether a recorded and a current value are the same setting. The same value, or one that prints the
    same (nan), is never a difference: a path given alike names the same file, also in a moved run."""
    a, b = _normalise(a), _normalise(b)
    if a == b or repr(a) == repr(b):
        return True
    if key in RUN_PATHS and isinstance(a, str) and isinstance(b, str) and a and b:
        return _run_path(a, old_root) == _run_path(b, new_root)
    return False


def config_drift(recorded, current) -> list[tuple[str, object, object]]:
    """(key, recorded value, current value) for every key that differs and may not; ABSENT where one of the
    two lacks the key (a recorded config without one of the ADDED_KEYS holds its old value).

    Args:
        recorded: the config a run was made with (a CfgNode, a dict, or its YAML text).
        current: the config of the rerun.
    """
    if isinstance(recorded, str):
        recorded = yaml.safe_load(recorded)
    old = dict(flatten(recorded))
    new = dict(flatten(current))
    old_root, new_root = str(old.get("OUTPUT_DIR", "")), str(new.get("OUTPUT_DIR", ""))
    out = []
    for key in sorted(set(old) | set(new)):
        if key in SAFE_KEYS or key.startswith(SAFE_SECTIONS):
            continue
        then = old.get(key, ADDED_KEYS.get(key, ABSENT))
        if not _same(key, then, new.get(key, ABSENT), old_root, new_root):
            out.append((key, then, new.get(key, ABSENT)))
    return out


def format_drift(drift: list[tuple[str, object, object]], limit: int = 12) -> str:
    lines = [f"  {k}: {a!r} then, {b!r} now" for k, a, b in drift[:limit]]
    if len(drift) > limit:
        lines.append(f"  … and {len(drift) - limit} more")
    return "\n".join(lines)


def check_drift(recorded, current: CN, where: str) -> list:
    """Raise ConfigDriftError naming the differing keys unless PIPELINE.ALLOW_CONFIG_CHANGE; returns
    the drift (empty when none)."""
    drift = config_drift(recorded, current)
    if drift and not current.PIPELINE.ALLOW_CONFIG_CHANGE:
        lacking = [what for what, side in (("not in the recorded config", 1), ("unknown to this version", 2))
                   if any(d[side] is ABSENT for d in drift)]
        note = (f"absent: {' / '.join(lacking)} (made by another version of spcl, or a record cut short)\n"
                if lacking else "")
        raise ConfigDriftError(
            f"{where} was made with another config; {len(drift)} key(s) differ:\n{format_drift(drift)}\n{note}"
            "Rerun with the original values to resume, choose a new OUTPUT_DIR to start afresh, or pass "
            "--allow-config-change (PIPELINE.ALLOW_CONFIG_CHANGE True) to go on with the new values.")
    return drift
