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

import datetime
import logging
import math
import os
import time
import uuid
from typing import Optional

import torch

from spcl.config import check_drift, get_cfg
from spcl.data.build import RUN_ROLES, is_unlabelled, unlabelled_why
from spcl.utils import comm
from spcl.utils.env import default_device, write_run_info
from spcl.utils.io import atomic_write_json, number, read_json, where_read
from spcl.utils.logger import setup_logger
from spcl.utils.run_lock import run_lock
from spcl.utils.safe_load import load_checkpoint

from .checkpoint import Checkpointer, load_mapped, unreadable
from .stages import STAGES, TRAINERS
from .trainer import OutOfMemory, clear_temp_files, summary_metrics

logger = logging.getLogger("spcl")
MANIFEST = "manifest.json"
UPSTREAM = "upstream.json"  # written when a pipeline stage starts: the ids of the stages it was made after
HANDED_KEYS = {"checkpoint": ("MODEL", "WEIGHTS"), "prototypes": ("PROTOTYPE", "PATH"),
               "pseudo_dir": ("DATASETS", "PSEUDO_DIR")}  # hand-off name → config key it fills


class KeepBestCheckpoint:
    """Hook for PIPELINE.HANDOFF best: after each target-val evaluation, save `model_best.pth` when
    the mIoU improves. It uses target labels, so the choice is an ORACLE one. A resumed stage starts from
    the best its `checkpoints_dir` already holds (the file records its metrics), so that an interruption
    does not change the choice."""

    def __init__(self, checkpoints_dir: str = ""):
        self.mIoU, self.iteration, self.path, self.metrics = -math.inf, None, None, None
        path = os.path.join(checkpoints_dir, "model_best.pth") if checkpoints_dir else ""
        if path and os.path.isfile(path):
            try:
                saved = load_checkpoint(path, mmap=True)
            except Exception as e:  # noqa: BLE001 - unreadable: the next evaluation writes a new one
                logger.warning("%s is not readable (%s): the best checkpoint is chosen anew", path, e)
                saved = {}
            if isinstance(saved.get("metrics"), dict):  # files from before the metrics were recorded: start anew
                self.mIoU, self.iteration, self.path = saved["metrics"]["mIoU"], saved["iteration"], path
                self.metrics = saved["metrics"]

    def after_evaluation(self, trainer, iteration: int, metrics: dict) -> None:
        if metrics["mIoU"] > self.mIoU:
            self.mIoU, self.iteration, self.metrics = metrics["mIoU"], iteration, summary_metrics(metrics)
            extra = {"stage": trainer.NAME, "oracle": True, "metrics": self.metrics, "config": trainer.cfg.dump()}
            self.path = trainer.checkpointer.save("model_best", iteration, extra, periodic=False, pointer=False)

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
        # a stage that resumes keeps the best it had; one that starts anew (no checkpoint) chooses anew
        best = KeepBestCheckpoint(runner.checkpointer.folder if runner.resume_from else "")
        runner.hooks.append(best)
    try:
        result = runner.run()
    except torch.cuda.OutOfMemoryError as e:  # outside a training loop: evaluation, prototypes, pseudo labels
        raise OutOfMemory.of(e, f"in stage {stage} ({output_dir})",
                             "Lower TEST.BATCH_SIZE (images per forward pass) or use SOLVER.AMP bf16 (--allow-"
                             "config-change); TEST.* keys may change on a rerun, which resumes the stage") from e
    if best is not None and best.path:  # what is handed on is reported: the best checkpoint's metrics
        result["outputs"]["checkpoint"] = best.path
        result["oracle"] = True
        result["handoff"] = best.describe()
        result["last_metrics"], result["metrics"] = result["metrics"], best.metrics
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


def recorded_config(folder: str, way_out: str = "choose a new OUTPUT_DIR") -> Optional[dict]:
    """The newest config recorded in a run or stage folder (config.yaml or config_<time>.yaml), as a
    nested dict; a damaged file is a ValueError that names it and `way_out`."""
    import yaml

    if not os.path.isdir(folder):
        return None
    files = [f for f in os.listdir(folder) if f == "config.yaml" or (f.startswith("config_") and f.endswith(".yaml"))]
    if not files:
        return None
    path = os.path.join(folder, max(files, key=lambda f: (os.path.getmtime(os.path.join(folder, f)), f)))
    with open(path) as f:
        try:
            recorded = yaml.safe_load(f)
        except (yaml.YAMLError, ValueError) as e:  # ValueError: bytes that are not UTF-8
            recorded = e
    if not isinstance(recorded, dict):
        what = (f"not valid YAML ({' '.join(str(recorded).split())})" if isinstance(recorded, Exception) else
                "empty" if recorded is None else f"a YAML {type(recorded).__name__}, not a config")
        raise ValueError(f"{path} is {what}: the config this folder was made with cannot be compared with this "
                         f"run's; restore the file, or {way_out}")
    return recorded


def run_stage_once(cfg, stage: str, folder: str, device: Optional[torch.device] = None, inputs: Optional[dict] = None,
                   root: str = "", after: Optional[dict] = None) -> tuple[dict, bool]:
    """Run a stage into `folder` unless its manifest says it finished; returns (manifest, ran).

    A finished stage is checked against the config it ran with (ConfigDriftError unless
    PIPELINE.ALLOW_CONFIG_CHANGE) and not run again. Output paths in the manifest are relative to
    `root` (OUTPUT_DIR for the pipeline, the stage folder for a single stage). The manifest gets a new
    random `id`, `after`: the ids of the earlier stages it was made from (`upstream_ids`), and `seconds`:
    the wall time of the run that finished the stage (for a stage resumed after an interruption, the time
    since the resume)."""
    done = read_manifest(folder)
    if done is not None:
        recorded = recorded_config(folder, f"delete {folder} to run that stage and the stages after it again")
        if recorded is not None:
            check_drift(recorded, cfg, f"finished stage {stage} in {folder}")
        return done, False
    root = root or folder
    started = time.monotonic()
    result = run_stage(cfg, stage, folder, device)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["outputs"] = _relative(root, result["outputs"])
    done = {"stage": stage, "status": "done", "id": uuid.uuid4().hex, "after": dict(after or {}),
            "inputs": dict(inputs or {}), **result}
    if comm.is_main_process():
        atomic_write_json(done, os.path.join(folder, MANIFEST))
    comm.synchronize()
    return done, True


def upstream_ids(made: dict) -> dict:
    """The ids of the earlier stages' manifests (those that have one: runs before ids have none)."""
    return {name: run_id for name, run_id in made.items() if run_id}


def made_after(folder: str) -> Optional[dict]:
    """The ids of the stages `folder` was made after (from its manifest, else from the `upstream.json`
    written when it started; {} for a folder from before ids), or None when there is no folder."""
    if not os.path.isdir(folder):
        return None
    done = read_manifest(folder)
    if done is not None:
        return dict(done.get("after") or {})
    path = os.path.join(folder, UPSTREAM)
    return dict(_read_stage_file(path).get("after") or {}) if os.path.isfile(path) else {}


def set_aside_if_stale(folder: str, after: dict) -> Optional[str]:
    """Move `folder` aside (to `<folder>.stale-<time>`, nothing deleted) when it was made after other
    versions of the earlier stages than those of this run: an earlier stage was rerun since (its folder
    deleted to run it again), so this stage's checkpoints, labels or partial progress come from outputs that
    no longer exist. Returns the new path, or None when the folder is absent or current."""
    recorded = made_after(folder)
    stale = recorded is not None and recorded != after
    comm.synchronize()  # every process has read the folder before it moves
    if not stale:
        return None
    moved = [None]
    if comm.is_main_process():
        base = moved[0] = f"{folder}.stale-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while os.path.exists(moved[0]):  # set aside twice within a second
            n += 1
            moved[0] = f"{base}~{n}"
        os.replace(folder, moved[0])
        changed = sorted(k for k in set(recorded) | set(after) if recorded.get(k) != after.get(k))
        logger.warning("%s was made from earlier outputs of %s, rerun since; it is moved to %s (delete it "
                       "when you no longer need it) and the stage runs again", folder, ", ".join(changed), moved[0])
    if comm.is_dist():  # the name rank 0 chose; the others wait here until it has moved the folder
        torch.distributed.broadcast_object_list(moved, src=0)
    return moved[0]


def stage_folders(cfg) -> list[tuple[str, str]]:
    """(stage, its folder `OUTPUT_DIR/<i>_<stage>`) for each stage of PIPELINE.STAGES, in order."""
    return [(stage, os.path.join(cfg.OUTPUT_DIR, f"{i}_{stage}")) for i, stage in enumerate(cfg.PIPELINE.STAGES)]


def stage_plan(cfg) -> list[tuple[str, str]]:
    """What a rerun of the pipeline in cfg.OUTPUT_DIR would do with each stage folder, without doing it:
    (folder name, one of "finished", "resumes", "runs", "set aside and run again"), by the rule of
    `set_aside_if_stale` (a stage after one that runs is made from new outputs). A training stage whose
    folder holds no checkpoint "runs": it starts from iteration 0."""
    plan, made, later_are_stale = [], {}, False
    for stage, folder in stage_folders(cfg):
        name = os.path.basename(folder)
        recorded, done = made_after(folder), read_manifest(folder)
        if recorded is not None and (later_are_stale or recorded != upstream_ids(made)):
            what = "set aside and run again"
        else:
            what = "runs" if recorded is None else "finished" if done is not None else resumes_or_runs(stage, folder)
        later_are_stale = later_are_stale or what != "finished"
        made[name] = done.get("id") if what == "finished" else None
        plan.append((name, what))
    return plan


def resumes_or_runs(stage: str, folder: str) -> str:
    """What a run does with the unfinished folder of `stage`: a training stage "resumes" from a checkpoint of its
    own, or "runs" from iteration 0 when it has none; an offline stage "resumes" (it reuses whatever partial
    work an interrupted run saved, and starts from the beginning when there is none)."""
    return "resumes" if stage not in TRAINERS or has_checkpoint(folder) else "runs"


def has_checkpoint(folder: str) -> bool:
    """Whether the stage folder holds a checkpoint to resume from."""
    return bool(Checkpointer(os.path.join(folder, "checkpoints"), {}, {}).candidates())


def read_manifest(folder: str) -> Optional[dict]:
    """The manifest of a finished stage folder, or None."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    data = _read_stage_file(path)
    if data.get("status") != "done":
        return None
    for key in ("metrics", "last_metrics"):  # all numbers; a NaN (an absent class's IoU) was written as null
        if isinstance(data.get(key), dict):
            data[key] = {k: [number(x) for x in v] if isinstance(v, list) else number(v) for k, v in data[key].items()}
    return data


def _read_stage_file(path: str) -> dict:
    """A stage folder's manifest.json or upstream.json; a damaged one names the way out."""
    try:
        data = read_json(path)
    except ValueError as e:
        folder = os.path.dirname(path)
        raise ValueError(f"{e}: whether the stage in {folder} finished, and from what, cannot be read; restore "
                         f"the file, or delete {folder} to run that stage and the stages after it again") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not the object a stage writes; restore the "
                         f"file, or delete {os.path.dirname(path)} to run that stage and the stages after it again")
    return data


def check_inputs(cfg, datasets: bool = True) -> None:
    """Before anything runs: every missing input of the run (initial weights, and with `datasets` the
    dataset folders and list files) in one FileNotFoundError, rather than one at a time, stage after stage."""
    from spcl.data.build import refuse_an_empty_list
    from spcl.data.check import dataset_for_check

    for key in ("SOURCE_LIST", "TARGET_LIST", "TEST_LIST"):  # the user's own files, also where the run makes the data
        refuse_an_empty_list(f"DATASETS.{key}", cfg.DATASETS[key])
    missing = []
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        missing.append(f"initial weights MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS!r}{where_read(cfg.MODEL.WEIGHTS)}")
    d = cfg.DATASETS
    seen = set()  # each set with the list file of its role: one name that is source and test is read with both
    for role, name in zip(RUN_ROLES, (d.SOURCE, d.TARGET, d.TEST)) if datasets else ():
        try:
            dataset = dataset_for_check(cfg, name, role)
        except FileNotFoundError as e:
            if str(e) not in seen:
                missing.append(f"{name}: {e}")
                seen.add(str(e))
            continue
        if role == "target" and cfg.PSEUDO.ORACLE:  # the diagnostic writes the target's ground truth
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
    refuse_a_stage_folder(cfg.OUTPUT_DIR)
    for _, folder in stage_folders(cfg):
        refuse_a_file_as_stage_folder(folder)
    check_stage_plan(cfg)
    if cfg.PIPELINE.HANDOFF == "best" and is_unlabelled(cfg, cfg.DATASETS.TEST):
        raise ValueError(f"PIPELINE.HANDOFF best picks checkpoints by their mIoU on DATASETS.TEST, and "
                         f"{cfg.DATASETS.TEST} has no labels: use PIPELINE.HANDOFF last, or a labelled test set")
    check_inputs(cfg, datasets)
    recorded = recorded_config(cfg.OUTPUT_DIR)
    if recorded is not None and made_anything(cfg.OUTPUT_DIR):
        check_drift(recorded, cfg, f"the run in {cfg.OUTPUT_DIR}")
    check_handoffs(cfg)


def check_handoffs(cfg) -> None:
    """For a rerun, before anything is written: every hand-off of a finished stage (its manifest's outputs) that
    a stage about to run reads is there and readable. A file deleted or cut short by hand used to stop that stage
    with `weights file not found` or `cannot read weights file`, which do not say what to do; this names the
    file, the stage that made it and the way out. Nothing is deleted."""
    root, handed = cfg.OUTPUT_DIR, {}  # hand-off name → (path, folder of the finished stage that made it)
    if not any(os.path.isfile(os.path.join(folder, MANIFEST)) for _, folder in stage_folders(cfg)):
        return  # no stage finished: nothing handed on yet (and the stage records are read when the run comes to them)
    for (name, what), stage in zip(stage_plan(cfg), cfg.PIPELINE.STAGES):
        folder = os.path.join(root, name)
        if what == "finished":
            outputs = read_manifest(folder).get("outputs") or {}
            handed.update({k: (_resolve(root, v), folder) for k, v in outputs.items() if k in HANDED_KEYS})
            continue
        for need in sorted(stage_reads(cfg, stage, folder, what) & set(handed)):
            path, maker = handed[need]
            problem = handoff_problem(need, path)
            if problem:
                made_by = read_manifest(maker).get("stage", os.path.basename(maker))
                raise (ValueError if os.path.exists(path) else FileNotFoundError)(
                    f"{path} {problem}: it is the {need.replace('_', ' ')} that finished stage {made_by} handed on "
                    f"({maker}), and stage {stage} ({folder}) reads it; restore it, or delete {maker} to run that "
                    "stage and the stages after it again")
        handed.pop(PRODUCES[stage], None)  # this stage makes it anew: the stages after it read that one


def stage_reads(cfg, stage: str, folder: str, what: str) -> set:
    """The hand-offs a stage about to run (`what`, from `stage_plan`) reads: an offline stage its model, and
    what `stage_needs` names; a training stage that starts anew its initial weights too; one that resumes from a
    checkpoint of its own only its pseudo labels (the checkpoint holds its model and prototype bank)."""
    needs = set(stage_needs(cfg, stage))
    if stage not in TRAINERS:
        return needs
    if what == "resumes" and has_checkpoint(folder):
        return needs & {"pseudo_dir"}
    return needs | {"checkpoint"}


def handoff_problem(name: str, path: str) -> Optional[str]:
    """What keeps hand-off `name` (a key of HANDED_KEYS) at `path` from being read, or None: a missing file or
    folder, a checkpoint `unreadable` rejects, a prototypes file that does not load (both memory-mapped: cheap)."""
    if name == "pseudo_dir":
        return None if os.path.isdir(path) else "is missing (the pseudo-label folder)"
    if not os.path.isfile(path):
        return "is missing"
    reason = unreadable(path) if name == "checkpoint" else load_mapped(path)[1]
    return None if reason is None else f"is unreadable ({reason})"


# what each stage hands on to the stages after it (a name of HANDED_KEYS)
PRODUCES = {"adv_warmup": "checkpoint", "source_only": "checkpoint", "align": "checkpoint", "self_train": "checkpoint",
            "prototypes": "prototypes", "pseudo_labels": "pseudo_dir"}
# the global batches of each training stage (config keys), which must split over processes and accumulation
BATCHES = {"adv_warmup": ("ADV_WARMUP.SOURCE_BATCH", "ADV_WARMUP.TARGET_BATCH"),
           "source_only": ("SOURCE_ONLY.SOURCE_BATCH",), "align": ("ALIGN.SOURCE_BATCH", "ALIGN.TARGET_BATCH"),
           "self_train": ("SELF_TRAIN.TARGET_BATCH",)}
# the stages that learn from (or, prototypes, average features by) the labels of DATASETS.SOURCE
READ_SOURCE_LABELS = ("adv_warmup", "source_only", "prototypes", "align")


def stage_needs(cfg, stage: str) -> tuple[str, ...]:
    """The hand-offs `stage` reads: align the prototypes (and the pseudo labels for an offline target
    mask), self-training the pseudo labels, the offline stages a trained model."""
    if stage == "align":
        offline = cfg.LOSS.CONTRAST.TARGET and cfg.ALIGN.TARGET_MASK == "offline"
        return ("prototypes", "pseudo_dir") if offline else ("prototypes",)
    needs = {"self_train": ("pseudo_dir",), "prototypes": ("checkpoint",), "pseudo_labels": ("checkpoint",)}
    return needs.get(stage, ())


def check_stage_plan(cfg) -> None:
    """Before any stage runs: PIPELINE.STAGES is not empty, a stage that reads source labels has a labelled
    DATASETS.SOURCE, every stage's input comes from an earlier stage or from its config key, and every
    training batch splits over the processes and SOLVER.ACCUM_STEPS. Each of these used to stop the run
    only when the stage came, after the stages before it had trained (an unlabelled source trained with a
    zero source loss)."""
    stages = list(cfg.PIPELINE.STAGES)
    if not stages:
        raise ValueError(f"PIPELINE.STAGES is empty: nothing to run; the default is {list(get_cfg().PIPELINE.STAGES)}")
    readers, source = [s for s in stages if s in READ_SOURCE_LABELS], cfg.DATASETS.SOURCE
    if readers and is_unlabelled(cfg, source):
        raise ValueError(f"DATASETS.SOURCE {source} has no labels ({unlabelled_why(cfg, source)}), and stage "
                         f"{readers[0]} of PIPELINE.STAGES reads source labels: set DATASETS.SOURCE to a "
                         "labelled set (gta5_train, synthia_train, synscapes_train, cityscapes_train, or folder_val "
                         "with DATASETS.FOLDER.VAL_LABEL_DIR)")
    made: set = set()
    for i, stage in enumerate(stages):
        for need in stage_needs(cfg, stage):
            section, key = HANDED_KEYS[need]
            if need not in made and not cfg[section][key]:
                before = f"no stage before it makes it ({stages[:i]})" if i else "it is the first stage"
                raise ValueError(f"stage {i} of PIPELINE.STAGES, {stage}, reads {need.replace('_', ' ')}, and "
                                 f"{before}: add the stage that makes it earlier, or set {section}.{key}")
        made.add(PRODUCES[stage])
        check_batches(cfg, stage)


def check_batches(cfg, stage: str) -> None:
    """Every global batch of a training stage splits over the processes and SOLVER.ACCUM_STEPS."""
    world, accum = comm.get_world_size(), int(cfg.SOLVER.ACCUM_STEPS)
    for name in BATCHES.get(stage, ()):
        if name == "ALIGN.TARGET_BATCH" and not cfg.LOSS.CONTRAST.TARGET:
            continue
        node, key = name.split(".")
        batch = int(cfg[node][key])
        if batch % world or (batch // world) % accum:
            raise ValueError(f"{name} {batch} does not split into {world} process(es) × SOLVER.ACCUM_STEPS "
                             f"{accum} equal parts (stage {stage}): make it a multiple of {world * accum}")


# the stage whose output each hand-off is, for the message of a single stage run that lacks it
MADE_BY = {"checkpoint": "a training stage's checkpoints/model_final.pth", "prototypes": "the prototypes stage's file",
           "pseudo_dir": "the pseudo_labels stage's labels/ folder"}


def stage_records(folder: str) -> list[str]:
    """The records of a pipeline stage folder that `folder` holds (manifest.json, upstream.json); [] for another
    folder."""
    return [f for f in (MANIFEST, UPSTREAM) if os.path.isfile(os.path.join(folder, f))]


def refuse_a_stage_folder(root: str) -> None:
    """OUTPUT_DIR is the run's folder, never one of its stage folders (one holding manifest.json or upstream.json):
    a run there would make its stage folders inside that stage's, beside the record of what made it."""
    held = stage_records(root)
    if held:
        parent = os.path.dirname(os.path.normpath(root)) or "."
        raise ValueError(f"OUTPUT_DIR {root} is a stage folder (it holds {held[0]}): a run writes its stage folders "
                         f"inside OUTPUT_DIR; give the run's folder ({parent}) to resume that run, or a new folder")


def refuse_a_file_as_stage_folder(folder: str) -> None:
    """NotADirectoryError naming the file where the run would make the stage folder `folder`, before anything is
    written; the stage used to stop only when it made the folder, with "[Errno 17] File exists"."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"stage folder {folder} is a file, not a folder: move or rename the file, the run "
                                 "makes the stage's outputs there")


def check_single_stage(cfg, stage: str, folder: str) -> str:
    """What `tools/train.py --stage` checks before it writes anything (also with --check): every input the stage
    reads (`stage_needs`: MODEL.WEIGHTS, PROTOTYPE.PATH, DATASETS.PSEUDO_DIR) is set and readable, its batches
    split over the processes, and in a `folder` that holds a finished stage or a checkpoint, the config is the
    recorded one (ConfigDriftError unless PIPELINE.ALLOW_CONFIG_CHANGE). A stage run without its input used to
    fail only after it had made its folder, some with a message about data files. Returns what the run will do
    with `folder`: "finished" (nothing to run), "resumes" or "runs"."""
    refuse_a_stage_folder(cfg.OUTPUT_DIR)
    refuse_a_file_as_stage_folder(folder)
    problems = []
    for need in stage_needs(cfg, stage):
        section, key = HANDED_KEYS[need]
        path = cfg[section][key]
        if need == "checkpoint":  # any trained model the tools take (a slim or converted file too), read by the stage
            problem = None if not path or os.path.isfile(path) else "is missing"
        else:
            problem = handoff_problem(need, path) if path else None
        if not path:
            problems.append(f"{section}.{key} is not set: stage {stage} reads the {need.replace('_', ' ')}, "
                            f"{MADE_BY[need]}")
        elif problem:
            problems.append(f"{section}.{key} = {path!r}{where_read(path)} {problem}")
    if problems:
        raise ValueError(f"stage {stage} cannot run:\n  - " + "\n  - ".join(problems))
    check_batches(cfg, stage)
    done = read_manifest(folder)
    what = "runs" if not os.path.isdir(folder) else "finished" if done is not None else resumes_or_runs(stage, folder)
    if done is not None or (stage in TRAINERS and what == "resumes"):
        recorded = recorded_config(folder, f"delete {folder} to run the stage again")
        if recorded is not None:
            check_drift(recorded, cfg, f"{'finished ' if done is not None else ''}stage {stage} in {folder}")
    return what


def made_anything(root: str) -> bool:
    """Whether a folder of the run in `root` holds a checkpoint or a finished stage's manifest. A run that
    stopped before either (bad data, unreadable weights) made nothing with its recorded config, so a rerun
    with the fix in the config is not refused as a change: the new config is recorded beside the old one."""
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        folder = os.path.join(root, name)
        checkpoints = os.path.join(folder, "checkpoints")
        if os.path.isfile(os.path.join(folder, MANIFEST)) or (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
            return True
    return False


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
        clear_temp_files(root)  # a summary.json or manifest cut short
        write_run_info(cfg, root, made=made_anything(root))
    handed: dict = {}
    summary = []
    made: dict = {}  # stage folder name → id of its finished manifest, for every stage so far
    for i, (stage, folder) in enumerate(stage_folders(cfg)):
        setup_logger(root, run_log=True)  # the banner goes to the run log, not to the previous stage's log.txt
        after = upstream_ids(made)
        set_aside_if_stale(folder, after)
        if read_manifest(folder) is None:
            logger.info("=== stage %d/%d: %s → %s", i + 1, len(cfg.PIPELINE.STAGES), stage, folder)
            if comm.is_main_process():
                atomic_write_json({"after": after}, os.path.join(folder, UPSTREAM))
        done, ran = run_stage_once(stage_config(cfg, handed), stage, folder, device, inputs=handed, root=root,
                                   after=after)
        made[os.path.basename(folder)] = done.get("id")
        if not ran:
            logger.info("=== stage %d/%d: %s already finished in %s, skipped", i + 1, len(cfg.PIPELINE.STAGES),
                        stage, folder)
        handed.update(done["outputs"])
        row = {"stage": stage, "folder": os.path.relpath(folder, root),
               **{k: v for k, v in done["metrics"].items() if k != "IoU"}}
        if done.get("oracle"):
            row["handoff"] = done["handoff"]
        if "seconds" in done:  # (stages finished by a version of spcl before it recorded the time have none)
            row["seconds"] = done["seconds"]
        summary.append(row)
    setup_logger(root, run_log=True)  # OUTPUT_DIR/log.txt: the whole run (stage folders log their own part too)
    logger.info("pipeline finished:\n%s", format_summary(summary))
    if comm.is_main_process():
        atomic_write_json({"stages": summary, "outputs": handed}, os.path.join(root, "summary.json"))
    return {"stages": summary, "outputs": handed}


def format_summary(rows: list[dict]) -> str:
    """One line per stage: target-val mIoU of training stages with their gain over the training stage
    before, kept share of pseudo-label stages; then the gain of the last training stage over the first;
    last, the wall time of each stage that recorded one (`seconds`) and their sum."""
    lines, trained = [], []
    for r in rows:
        if "mIoU" in r:
            extra = "".join(f"  {k} {r[k]:.2f}" for k in ("mIoU_tail", "mIoU_13") if k in r)
            if r["mIoU"] != r["mIoU"]:  # NaN: a test set without labels scores nothing
                lines.append(f"{r['stage']:<14} trained (the test set has no labels: no mIoU)")
                continue
            gain = f"  ({r['mIoU'] - trained[-1]['mIoU']:+.2f} vs {trained[-1]['stage']})" if trained else ""
            trained.append(r)
            lines.append(f"{r['stage']:<14} target mIoU {r['mIoU']:6.2f}{extra}{gain}"
                         + ("  [ORACLE checkpoint choice]" if "handoff" in r else ""))
        elif "oracle" in r and "labelled_fraction" in r:  # PSEUDO.ORACLE: the labels are ground truth
            lines.append(f"{r['stage']:<14} {100 * r['labelled_fraction']:.1f}% of target pixels labelled  "
                         f"[ORACLE labels: ground truth on {r['oracle']} pixels]")
        elif "kept_fraction" in r:
            q = f", mIoU of kept pixels {r['pseudo_label_mIoU']:.2f}" if "pseudo_label_mIoU" in r else ""
            lines.append(f"{r['stage']:<14} {100 * r['kept_fraction']:.1f}% of target pixels labelled{q}")
        else:
            lines.append(f"{r['stage']:<14} done")
    if len(trained) > 1:
        first, last = trained[0], trained[-1]
        lines.append(f"{last['stage']} vs {first['stage']}: {last['mIoU'] - first['mIoU']:+.2f} mIoU")
    timed = [r for r in rows if "seconds" in r]
    if timed:
        untimed = len(rows) - len(timed)
        total = f"{duration(sum(r['seconds'] for r in timed))} in all" + (
            f"; {untimed} stage(s) made by an older version, untimed" if untimed else "")
        lines.append("wall time: " + ", ".join(f"{r['stage']} {duration(r['seconds'])}" for r in timed)
                     + f" ({total})")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """`seconds` for a reader: "45 s", "2 min 05 s", "1 h 03 min"."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
