"""The whole SPCL pipeline (docs/method.md "Pipeline") from one config: stages run in
PIPELINE.STAGES order, each in its own sub-folder `<i>_<stage>` of OUTPUT_DIR, each handing its
outputs to the next through a `manifest.json` (paths relative to OUTPUT_DIR, so a copied run folder
stays self-contained). Running again skips finished stages and resumes the interrupted one from its
last checkpoint. `run_stage` runs one stage with its inputs taken from config keys (MODEL.WEIGHTS,
PROTOTYPE.PATH, DATASETS.PSEUDO_DIR).

Pipeline policy lives here, not in the training loop: which checkpoint a stage hands on
(PIPELINE.HANDOFF; `best` is an oracle choice that uses target labels, marked in every report).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional

import torch

from spcl.config import check_drift
from spcl.utils import comm
from spcl.utils.env import default_device, write_run_info
from spcl.utils.io import atomic_write_json, read_json, where_read
from spcl.utils.logger import setup_logger
from spcl.utils.run_lock import run_lock

from .stages import STAGES, TRAINERS
from .trainer import OutOfMemory

logger = logging.getLogger("spcl")
MANIFEST = "manifest.json"
HANDED_KEYS = {"checkpoint": ("MODEL", "WEIGHTS"), "prototypes": ("PROTOTYPE", "PATH"),
               "pseudo_dir": ("DATASETS", "PSEUDO_DIR")}  # hand-off name → config key it fills


class KeepBestCheckpoint:
    """Hook for PIPELINE.HANDOFF best: after each target-val evaluation, save `model_best.pth` when
    the mIoU improves. It uses target labels, so the choice is an ORACLE one."""

    def __init__(self):
        self.mIoU, self.iteration, self.path = -math.inf, None, None

    def after_evaluation(self, trainer, iteration: int, metrics: dict) -> None:
        if metrics["mIoU"] > self.mIoU:
            self.mIoU, self.iteration = metrics["mIoU"], iteration
            self.path = trainer.checkpointer.save("model_best", iteration, {"stage": trainer.NAME, "oracle": True},
                                                  periodic=False, pointer=False)

    def describe(self) -> str:
        return (f"best target-val checkpoint (iteration {self.iteration}, mIoU {self.mIoU:.2f}): an ORACLE "
                "choice that uses target labels")


def run_stage(cfg, stage: str, output_dir: str, device: Optional[torch.device] = None) -> dict:
    """Run (or resume) one stage into `output_dir`; returns {"outputs", "metrics", …}. With
    PIPELINE.HANDOFF best, a training stage hands on its best target-val checkpoint (oracle)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage '{stage}'; expected one of {tuple(STAGES)}")
    setup_logger(output_dir)
    runner = STAGES[stage](cfg, output_dir, device or default_device())
    best = None
    if stage in TRAINERS and cfg.PIPELINE.HANDOFF == "best":
        best = KeepBestCheckpoint()
        runner.hooks.append(best)
    try:
        result = runner.run()
    except torch.cuda.OutOfMemoryError as e:  # outside a training loop: evaluation, prototypes, pseudo labels
        raise OutOfMemory.of(e, f"in stage {stage} ({output_dir})",
                             "Lower TEST.BATCH_SIZE (images per forward pass) or use SOLVER.AMP bf16 (--allow-"
                             "config-change); TEST.* keys may change on a rerun, which resumes the stage") from e
    if best is not None and best.path:
        result["outputs"]["checkpoint"] = best.path
        result["oracle"] = True
        result["handoff"] = best.describe()
    return result


def stage_config(cfg, handed: dict):
    """The config of a stage: `cfg` with the inputs handed on by earlier stages (absolute or
    relative to OUTPUT_DIR) filled in."""
    c = cfg.clone()
    c.defrost()
    for name, (section, key) in HANDED_KEYS.items():
        if name in handed:
            c[section][key] = _resolve(cfg.OUTPUT_DIR, handed[name])
    c.freeze()
    return c


def _resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def _relative(root: str, outputs: dict) -> dict:
    return {k: os.path.relpath(v, root) for k, v in outputs.items()}


def recorded_config(folder: str) -> Optional[str]:
    """The newest config recorded in a run or stage folder (config.yaml or config_<time>.yaml)."""
    if not os.path.isdir(folder):
        return None
    files = [f for f in os.listdir(folder) if f == "config.yaml" or (f.startswith("config_") and f.endswith(".yaml"))]
    if not files:
        return None
    newest = max(files, key=lambda f: (os.path.getmtime(os.path.join(folder, f)), f))
    with open(os.path.join(folder, newest)) as f:
        return f.read()


def run_stage_once(cfg, stage: str, folder: str, device: Optional[torch.device] = None, inputs: Optional[dict] = None,
                   root: str = "") -> tuple[dict, bool]:
    """Run a stage into `folder` unless its manifest says it finished; returns (manifest, ran).

    A finished stage is checked against the config it ran with (ConfigDriftError unless
    PIPELINE.ALLOW_CONFIG_CHANGE) and not run again. Output paths in the manifest are relative to
    `root` (OUTPUT_DIR for the pipeline, the stage folder for a single stage)."""
    done = read_manifest(folder)
    if done is not None:
        recorded = recorded_config(folder)
        if recorded is not None:
            check_drift(recorded, cfg, f"finished stage {stage} in {folder}")
        return done, False
    root = root or folder
    result = run_stage(cfg, stage, folder, device)
    result["outputs"] = _relative(root, result["outputs"])
    done = {"stage": stage, "status": "done", "inputs": dict(inputs or {}), **result}
    if comm.is_main_process():
        atomic_write_json(done, os.path.join(folder, MANIFEST))
    comm.synchronize()
    return done, True


def read_manifest(folder: str) -> Optional[dict]:
    """The manifest of a finished stage folder, or None."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    data = read_json(path)
    return data if data.get("status") == "done" else None


def check_inputs(cfg, datasets: bool = True) -> None:
    """Before anything runs: every missing input of the run (initial weights, and with `datasets` the
    dataset folders and list files) in one FileNotFoundError, rather than one at a time, stage after stage."""
    from spcl.data.check import dataset_for_check

    missing = []
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        missing.append(f"initial weights MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS!r}{where_read(cfg.MODEL.WEIGHTS)}")
    for name in dict.fromkeys((cfg.DATASETS.SOURCE, cfg.DATASETS.TARGET, cfg.DATASETS.TEST) if datasets else ()):
        try:
            dataset = dataset_for_check(cfg, name)
        except FileNotFoundError as e:
            missing.append(f"{name}: {e}")
            continue
        if name == cfg.DATASETS.TARGET and cfg.PSEUDO.ORACLE:  # the diagnostic writes the target's ground truth
            unlabelled = [image for image, label in dataset.items if not label or not os.path.isfile(label)]
            if unlabelled:
                missing.append(f"{name}: {len(unlabelled)} of {len(dataset.items)} images have no label file (e.g. "
                               f"{unlabelled[0]}), and PSEUDO.ORACLE {cfg.PSEUDO.ORACLE!r} writes their ground truth")
    if missing:
        raise FileNotFoundError(f"{len(missing)} input(s) of this run are missing:\n  - " + "\n  - ".join(missing))


def check_run(cfg, datasets: bool = True) -> None:
    """What a pipeline run checks before it writes anything (also `tools/train.py --check`): known stages,
    every input present (`check_inputs`), and for a rerun the config the run folder was made with
    (ConfigDriftError unless PIPELINE.ALLOW_CONFIG_CHANGE): a rerun must not mix two configs."""
    for stage in cfg.PIPELINE.STAGES:
        if stage not in STAGES:
            raise KeyError(f"unknown stage '{stage}' in PIPELINE.STAGES; expected one of {tuple(STAGES)}")
    check_inputs(cfg, datasets)
    recorded = recorded_config(cfg.OUTPUT_DIR)
    if recorded is not None:
        check_drift(recorded, cfg, f"the run in {cfg.OUTPUT_DIR}")


def run_pipeline(cfg, device: Optional[torch.device] = None) -> dict:
    """Run PIPELINE.STAGES in order, skipping finished stages; returns the per-stage summary, also
    written to OUTPUT_DIR/summary.json."""
    device = device or default_device()
    check_run(cfg)
    with run_lock(cfg.OUTPUT_DIR):  # one run per folder
        return _run_stages(cfg, device)


def _run_stages(cfg, device: torch.device) -> dict:
    root = cfg.OUTPUT_DIR
    setup_logger(root, run_log=True)  # OUTPUT_DIR/log.txt: the whole run (stage folders log their own part too)
    if comm.is_main_process():
        write_run_info(cfg, root)
    handed: dict = {}
    summary = []
    for i, stage in enumerate(cfg.PIPELINE.STAGES):
        folder = os.path.join(root, f"{i}_{stage}")
        if read_manifest(folder) is None:
            logger.info("=== stage %d/%d: %s → %s", i + 1, len(cfg.PIPELINE.STAGES), stage, folder)
        done, ran = run_stage_once(stage_config(cfg, handed), stage, folder, device, inputs=handed, root=root)
        if not ran:
            logger.info("=== stage %d/%d: %s already finished in %s, skipped", i + 1, len(cfg.PIPELINE.STAGES),
                        stage, folder)
        handed.update(done["outputs"])
        row = {"stage": stage, "folder": os.path.relpath(folder, root),
               **{k: v for k, v in done["metrics"].items() if k != "IoU"}}
        if done.get("oracle"):
            row["handoff"] = done["handoff"]
        summary.append(row)
    setup_logger(root, run_log=True)  # OUTPUT_DIR/log.txt: the whole run (stage folders log their own part too)
    logger.info("pipeline finished:\n%s", format_summary(summary))
    if comm.is_main_process():
        atomic_write_json({"stages": summary, "outputs": handed}, os.path.join(root, "summary.json"))
    return {"stages": summary, "outputs": handed}


def format_summary(rows: list[dict]) -> str:
    """One line per stage: target-val mIoU of training stages with their gain over the training stage
    before, kept share of pseudo-label stages; last, the gain of the last training stage over the first."""
    lines, trained = [], []
    for r in rows:
        if "mIoU" in r:
            extra = "".join(f"  {k} {r[k]:.2f}" for k in ("mIoU_tail", "mIoU_13") if k in r)
            gain = f"  ({r['mIoU'] - trained[-1]['mIoU']:+.2f} vs {trained[-1]['stage']})" if trained else ""
            trained.append(r)
            lines.append(f"{r['stage']:<14} target mIoU {r['mIoU']:6.2f}{extra}{gain}"
                         + ("  [ORACLE checkpoint choice]" if "handoff" in r else ""))
        elif "kept_fraction" in r:
            q = f", mIoU of kept pixels {r['pseudo_label_mIoU']:.2f}" if "pseudo_label_mIoU" in r else ""
            lines.append(f"{r['stage']:<14} {100 * r['kept_fraction']:.1f}% of target pixels labelled{q}")
        else:
            lines.append(f"{r['stage']:<14} done")
    if len(trained) > 1:
        first, last = trained[0], trained[-1]
        lines.append(f"{last['stage']} vs {first['stage']}: {last['mIoU'] - first['mIoU']:+.2f} mIoU")
    return "\n".join(lines)
