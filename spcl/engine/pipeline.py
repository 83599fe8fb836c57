"""The whole SPCL pipeline (SPEC §1) from one config: stages run in PIPELINE.STAGES order, each in
its own sub-folder `<i>_<stage>` of OUTPUT_DIR, each handing its outputs to the next through a
`manifest.json`. Running again skips finished stages and resumes the interrupted one from its last
checkpoint. `run_stage` runs one stage with its inputs taken from config keys (MODEL.WEIGHTS,
PROTOTYPE.PATH, DATASETS.PSEUDO_DIR)."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch

from spcl.data import build_dataset, build_test_loader, prepare_data
from spcl.modeling import build_segmentor
from spcl.prototypes import compute_source_prototypes
from spcl.pseudo import generate_pseudo_labels
from spcl.utils import comm
from spcl.utils.env import seed_all, write_run_info
from spcl.utils.io import atomic_torch_save, atomic_write_json, read_json
from spcl.utils.logger import setup_logger

from .events import EventWriter
from .stages import TRAINERS
from .trainer import AMP_DTYPES, default_device

logger = logging.getLogger("spcl")
STAGES = tuple(TRAINERS) + ("prototypes", "pseudo_labels")
MANIFEST = "manifest.json"


def _model_for_inference(cfg, device: torch.device):
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("this stage needs a trained model: set MODEL.WEIGHTS to a checkpoint")
    return build_segmentor(cfg).to(device).eval()


def run_prototypes(cfg, output_dir: str, device: torch.device, progress: bool = True) -> dict:
    """`prototypes` stage: source-set prototypes (K×C) with the model of MODEL.WEIGHTS → prototypes.pth."""
    model = _model_for_inference(cfg, device)
    dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=False, role="source_eval")
    loader = build_test_loader(cfg, dataset)
    result = compute_source_prototypes(model, loader, cfg.MODEL.NUM_CLASSES, device, cfg.PROTOTYPE.INIT,
                                       cfg.PROTOTYPE.SOURCE_MASK, cfg.PROTOTYPE.NUM_IMAGES, progress)
    path = os.path.join(output_dir, "prototypes.pth")
    if comm.is_main_process():
        atomic_torch_save({"prototypes": result["prototypes"], "counts": result["counts"],
                           "init": cfg.PROTOTYPE.INIT, "source_mask": cfg.PROTOTYPE.SOURCE_MASK}, path)
    comm.synchronize()
    absent = [i for i, c in enumerate(result["counts"].tolist()) if c == 0]
    logger.info("prototypes of %d classes written to %s%s", len(result["counts"]), path,
                f" (classes {absent} never seen: zero prototypes)" if absent else "")
    return {"outputs": {"prototypes": path}, "metrics": {"classes_seen": len(result["counts"]) - len(absent)}}


def run_pseudo_labels(cfg, output_dir: str, device: torch.device, progress: bool = True) -> dict:
    """`pseudo_labels` stage: thresholds + one label PNG per target training image → `labels/`."""
    model = _model_for_inference(cfg, device)
    dataset = build_dataset(cfg, cfg.DATASETS.TARGET, train=False, role="test", labels="optional")
    loader = build_test_loader(cfg, dataset)
    label_dir = os.path.join(output_dir, "labels")
    summary = generate_pseudo_labels(model, loader, label_dir, cfg.MODEL.NUM_CLASSES, device,
                                     cfg.PSEUDO.THRESHOLD_CAP, cfg.PSEUDO.NUM_BINS, progress=progress,
                                     amp_dtype=AMP_DTYPES[cfg.SOLVER.AMP])
    events = EventWriter(output_dir, "pseudo_labels", enabled=comm.is_main_process())
    events.write(0, {k: summary[k] for k in ("thresholds", "kept_fraction", "kept_fraction_per_class")})
    events.close()
    quality = summary.get("quality_on_kept_pixels", {})
    logger.info("pseudo labels: %d images in %s, %.1f%% of pixels kept%s", summary["num_images"], label_dir,
                100 * summary["kept_fraction"],
                f", mIoU on kept pixels {quality['mIoU']:.2f}" if quality else "")
    metrics = {"kept_fraction": summary["kept_fraction"], "thresholds": summary["thresholds"]}
    if quality:
        metrics["pseudo_label_mIoU"] = quality["mIoU"]
    return {"outputs": {"pseudo_dir": label_dir}, "metrics": metrics}


def run_stage(cfg, stage: str, output_dir: str, device: Optional[torch.device] = None) -> dict:
    """Run (or resume) one stage into `output_dir`; returns {"outputs", "metrics", …}."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage '{stage}'; expected one of {STAGES}")
    device = device or default_device()
    setup_logger(output_dir)
    if stage in TRAINERS:
        return TRAINERS[stage](cfg, output_dir, device).train()
    seed_all(cfg.SEED)
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        write_run_info(cfg, output_dir)
    runner = run_prototypes if stage == "prototypes" else run_pseudo_labels
    return runner(cfg, output_dir, device)


def stage_config(cfg, stage: str, handed: dict):
    """The config of a stage: `cfg` with the inputs handed on by earlier stages filled in."""
    c = cfg.clone()
    c.defrost()
    if "checkpoint" in handed:
        c.MODEL.WEIGHTS = handed["checkpoint"]
    if "prototypes" in handed:
        c.PROTOTYPE.PATH = handed["prototypes"]
    if "pseudo_dir" in handed:
        c.DATASETS.PSEUDO_DIR = handed["pseudo_dir"]
    c.freeze()
    return c


def read_manifest(folder: str) -> Optional[dict]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    data = read_json(path)
    return data if data.get("status") == "done" else None


def run_pipeline(cfg, device: Optional[torch.device] = None) -> dict:
    """Run PIPELINE.STAGES in order, skipping finished stages; returns the per-stage summary, also
    written to OUTPUT_DIR/summary.json."""
    device = device or default_device()
    for stage in cfg.PIPELINE.STAGES:
        if stage not in STAGES:
            raise KeyError(f"unknown stage '{stage}' in PIPELINE.STAGES; expected one of {STAGES}")
    setup_logger(cfg.OUTPUT_DIR, filename="pipeline_log.txt")
    if comm.is_main_process():
        write_run_info(cfg, cfg.OUTPUT_DIR)
    prepare_data(cfg)
    handed: dict = {}
    summary = []
    for i, stage in enumerate(cfg.PIPELINE.STAGES):
        folder = os.path.join(cfg.OUTPUT_DIR, f"{i}_{stage}")
        done = read_manifest(folder)
        if done is None:
            logger.info("=== stage %d/%d: %s → %s", i + 1, len(cfg.PIPELINE.STAGES), stage, folder)
            result = run_stage(stage_config(cfg, stage, handed), stage, folder, device)
            done = {"stage": stage, "status": "done", "inputs": dict(handed), **result}
            if comm.is_main_process():
                atomic_write_json(done, os.path.join(folder, MANIFEST))
            comm.synchronize()
        else:
            logger.info("=== stage %d/%d: %s already finished in %s, skipped", i + 1, len(cfg.PIPELINE.STAGES),
                        stage, folder)
        handed.update(done["outputs"])
        row = {"stage": stage, "folder": folder, **{k: v for k, v in done["metrics"].items() if k != "IoU"}}
        if done.get("oracle"):
            row["handoff"] = done["handoff"]
        summary.append(row)
    setup_logger(cfg.OUTPUT_DIR, filename="pipeline_log.txt")
    logger.info("pipeline finished:\n%s", format_summary(summary))
    if comm.is_main_process():
        atomic_write_json({"stages": summary, "outputs": handed}, os.path.join(cfg.OUTPUT_DIR, "summary.json"))
    return {"stages": summary, "outputs": handed}


def format_summary(rows: list[dict]) -> str:
    """One line per stage: target-val mIoU of training stages, kept share of pseudo-label stages."""
    lines = []
    for r in rows:
        if "mIoU" in r:
            extra = "".join(f"  {k} {r[k]:.2f}" for k in ("mIoU_tail", "mIoU_13") if k in r)
            lines.append(f"{r['stage']:<14} target mIoU {r['mIoU']:6.2f}{extra}"
                         + ("  [ORACLE checkpoint choice]" if "handoff" in r else ""))
        elif "kept_fraction" in r:
            q = f", mIoU of kept pixels {r['pseudo_label_mIoU']:.2f}" if "pseudo_label_mIoU" in r else ""
            lines.append(f"{r['stage']:<14} {100 * r['kept_fraction']:.1f}% of target pixels labelled{q}")
        else:
            lines.append(f"{r['stage']:<14} done")
    return "\n".join(lines)
