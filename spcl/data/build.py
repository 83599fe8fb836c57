"""Catalog of dataset names and the builders of transforms, datasets and loaders (config read here).

Catalog names: gta5_train, synthia_train, synscapes_train, cityscapes_train, cityscapes_val,
cityscapes_test (no labels), folder_train / folder_val (a custom domain from plain folders,
DATASETS.FOLDER.*), cityscapes_pseudo (the pseudo-labelled target training set: the images of
DATASETS.TARGET, cityscapes_train or folder_train, with labels from DATASETS.PSEUDO_DIR; the name is
kept for the stages that use it).
"""
from __future__ import annotations

import logging
import os
import zlib
from typing import Optional

import torch
from torch.utils.data import DataLoader, default_collate

from spcl.utils import comm
from spcl.utils.signals import ignore_stop_signals, signal_numbers

from . import transforms as T
from .datasets import (CityscapesDataset, CityscapesPseudoDataset, FolderDataset, GTA5Dataset, PseudoLabelDataset,
                       SegmentationDataset, SynscapesDataset, SynthiaDataset, id_map_lut, read_list_file)
from .samplers import ClassBalancedSampler, InfiniteSampler, load_class_index

logger = logging.getLogger("spcl")

CATALOG = ("gta5_train", "synthia_train", "synscapes_train", "cityscapes_train", "cityscapes_val",
           "cityscapes_test", "folder_train", "folder_val", "cityscapes_pseudo")
UNLABELLED = ("cityscapes_test", "folder_train")  # sets without labels (labels `none` by default)
ROLES = ("source", "target", "self_train", "test", "source_eval")
RUN_ROLES = ("source", "target", "test")  # what a dataset is to the run: DATASETS.SOURCE / TARGET / TEST
# the run role of a transform role: its list file (DATASETS.<RUN ROLE>_LIST) selects the items
LIST_ROLES = {"source": "source", "source_eval": "source", "target": "target", "self_train": "target", "test": "test"}


def is_unlabelled(cfg, name: str) -> bool:
    """Whether dataset `name` has no labels under `cfg` (also folder_val without DATASETS.FOLDER.VAL_LABEL_DIR)."""
    return name in UNLABELLED or (name == "folder_val" and not cfg.DATASETS.FOLDER.VAL_LABEL_DIR)


def unlabelled_why(cfg, name: str) -> str:
    """Why dataset `name` has no labels under `cfg`, for messages; "" when it has them."""
    if name == "cityscapes_test":
        return "the Cityscapes test split has no public labels"
    if name == "folder_train":
        return "folder_train is read without labels: DATASETS.FOLDER.TRAIN_DIR gives images only"
    if is_unlabelled(cfg, name):
        return "DATASETS.FOLDER.VAL_LABEL_DIR is empty"
    return ""


def run_roles(cfg, name: str) -> list[str]:
    """The run roles (RUN_ROLES order) of dataset `name`: those of DATASETS.SOURCE / TARGET / TEST it is;
    cityscapes_pseudo is the target's (its images are DATASETS.TARGET's). One name may have several."""
    if name == "cityscapes_pseudo":
        return ["target"]
    d = cfg.DATASETS
    return [r for r, n in zip(RUN_ROLES, (d.SOURCE, d.TARGET, d.TEST)) if n == name]


def list_role(cfg, name: str, role: Optional[str] = None) -> str:
    """The run role whose list file (DATASETS.SOURCE_LIST / TARGET_LIST / TEST_LIST) selects `name`'s items
    when it is read for `role` (a transform role or a run role): the role's own when `name` is the dataset
    of that role, so a set that is both source and test trains on SOURCE_LIST and is tested on TEST_LIST;
    else the first role `name` has in the run; "" for none (every item)."""
    roles = run_roles(cfg, name)
    wanted = LIST_ROLES.get(role or "", "")
    if wanted in roles:
        return wanted
    return roles[0] if roles else ""


def list_file_of(cfg, name: str, role: Optional[str] = None) -> str:
    """The list file selecting `name`'s items read for `role` (see `list_role`); "" = every item."""
    r = list_role(cfg, name, role)
    return cfg.DATASETS[f"{r.upper()}_LIST"] if r else ""


def build_transform(cfg, role: str) -> T.Compose:
    """Transforms of a role: `source`/`target` (warm-up, align), `self_train`, `test` (image at
    INPUT.TEST_SIZE, label at its own size), `source_eval` (image at INPUT.SOURCE_SIZE, the size the
    model sees source images at, label at its own size, no augmentation: prototypes and analyses)."""
    inp = cfg.INPUT
    to_tensor = T.ToTensor(inp.PIXEL_MEAN, inp.PIXEL_STD, inp.TO_BGR255)
    jitter = T.ColorJitter(*inp.COLOR_JITTER)
    if role in ("test", "source_eval"):
        size = inp.TEST_SIZE if role == "test" else inp.SOURCE_SIZE
        return T.Compose([T.Resize(size, resize_label=False), to_tensor])
    if role == "self_train":
        ts = [T.RandomScaleCrop(inp.SELF_TRAIN_BASE_SIZE, inp.SELF_TRAIN_SCALE, inp.SELF_TRAIN_CROP),
              T.RandomHorizontalFlip(inp.SELF_TRAIN_FLIP_PROB)]
        return T.Compose(ts + ([jitter] if inp.SELF_TRAIN_JITTER else []) + [to_tensor])
    if role in ("source", "target"):
        size = inp.SOURCE_SIZE if role == "source" else inp.TARGET_SIZE
        use_jitter = inp.SOURCE_JITTER if role == "source" else inp.TARGET_JITTER
        ts = [T.Resize(size), T.RandomHorizontalFlip(inp.FLIP_PROB)]
        return T.Compose(ts + ([jitter] if use_jitter else []) + [to_tensor])
    raise ValueError(f"unknown transform role {role!r}; expected one of {ROLES}")


def build_dataset(cfg, name: str, train: bool, role: Optional[str] = None,
                  labels: Optional[str] = None, list_for: Optional[str] = None) -> SegmentationDataset:
    """A dataset of the catalog with the transforms of its role.

    Args:
        cfg: config (DATASETS.*, INPUT.*, MODEL.NUM_CLASSES are read).
        name: catalog name, e.g. `gta5_train`, `cityscapes_val`, `cityscapes_pseudo`.
        train: training transforms (True) or test transforms (False: image resized to
            INPUT.TEST_SIZE, label kept at its own size).
        role: one of ROLES (see build_transform); by default `test` when not training,
            `self_train` for cityscapes_pseudo, `source` for DATASETS.SOURCE, else `target`.
        labels: `required` | `optional` | `none`; by default required except for the unlabelled
            target training set, the sets without labels (cityscapes_test, folder_train) and
            folder_val without DATASETS.FOLDER.VAL_LABEL_DIR (none); always required for the
            source roles (`source`, `source_eval`: they train or measure on source labels). An
            unlabelled test set (role `test`, labels `none`) gives all-255 labels at each image's
            own size, so predictions come at the image's size.
        list_for: the run role (`source`, `target`, `test`) whose DATASETS.*_LIST selects the items;
            by default that of `role` (`list_role`): source for `source`/`source_eval`, target for
            `target`/`self_train`, test for `test`, each when `name` is that role's dataset.
    Returns:
        items: dicts with `image` (float 3×H×W), `label` (int64 H×W, 255 ignore), `name`, `index`.
    """
    if name not in CATALOG:
        raise KeyError(f"unknown dataset name '{name}'; expected one of {CATALOG}")
    if role is None:
        if not train:
            role = "test"
        elif name == "cityscapes_pseudo":
            role = "self_train"
        else:
            role = "source" if name == cfg.DATASETS.SOURCE else "target"
    if labels is None:
        unlabelled = is_unlabelled(cfg, name) and role not in ("source", "source_eval")
        labels = "none" if unlabelled or (train and role == "target" and name != "cityscapes_pseudo") else "required"
    if list_for is not None and list_for not in RUN_ROLES:
        raise ValueError(f"unknown list role {list_for!r}; expected one of {RUN_ROLES}")
    list_file = list_file_of(cfg, name, list_for or role)
    refuse_an_empty_list(f"DATASETS.{list_role(cfg, name, list_for or role).upper()}_LIST", list_file)
    dataset = _build(cfg, name, build_transform(cfg, role), labels, list_file)
    if role == "test" and labels == "none":
        dataset.placeholder_at_image_size = True
    return dataset


def refuse_an_empty_list(key: str, list_file: str) -> None:
    """A list file that selects nothing is a config error naming its key: an empty training set used to stop in
    the sampler ("InfiniteSampler needs a non-empty dataset"), and an empty test set trained a stage that then
    reported no mIoU (tools/test.py: nan) while tools/check_data.py said OK."""
    if list_file and os.path.isfile(list_file) and not read_list_file(list_file):
        raise ValueError(f"{key} {list_file} lists no files (every line is blank or a # comment): give one image "
                         f"a line, or set {key} \"\" to read every image of the set")


def _folder_dataset(cfg, name: str, transform, list_file: str, labels: str) -> FolderDataset:
    f = cfg.DATASETS.FOLDER
    if name == "folder_train":
        return FolderDataset(f.TRAIN_DIR, transform, list_file, cfg.MODEL.NUM_CLASSES, labels,
                             image_suffix=f.IMAGE_SUFFIX)
    return FolderDataset(f.VAL_DIR, transform, list_file, cfg.MODEL.NUM_CLASSES, labels, f.VAL_LABEL_DIR,
                         f.IMAGE_SUFFIX, f.LABEL_SUFFIX, id_map_lut(f.ID_MAP, f.ID_MAP_FILE, cfg.MODEL.NUM_CLASSES))


def _build(cfg, name: str, transform, labels: str, list_file: str) -> SegmentationDataset:
    root, K = cfg.DATASETS.DATA_DIR, cfg.MODEL.NUM_CLASSES
    if name == "gta5_train":
        return GTA5Dataset(os.path.join(root, "gta5"), transform, list_file, K, labels)
    if name == "synthia_train":
        return SynthiaDataset(os.path.join(root, "synthia"), transform, list_file, K, labels)
    if name == "synscapes_train":
        return SynscapesDataset(os.path.join(root, "synscapes"), transform, list_file, K, labels)
    if name in ("folder_train", "folder_val"):
        return _folder_dataset(cfg, name, transform, list_file, labels)
    if name == "cityscapes_pseudo" and cfg.DATASETS.TARGET in ("folder_train", "folder_val"):
        base = _folder_dataset(cfg, cfg.DATASETS.TARGET, None, cfg.DATASETS.TARGET_LIST, "none")
        return PseudoLabelDataset(base, cfg.DATASETS.PSEUDO_DIR, transform, K)
    if name == "cityscapes_pseudo":
        return CityscapesPseudoDataset(os.path.join(root, "cityscapes"), cfg.DATASETS.PSEUDO_DIR, transform,
                                       "train", cfg.DATASETS.TARGET_LIST, K)
    split = name.split("_")[1]
    return CityscapesDataset(os.path.join(root, "cityscapes"), split, transform, list_file, K, labels)


def local_batch_size(global_batch: int) -> int:
    """This process's share of a global batch; it must divide evenly."""
    world = comm.get_world_size()
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} does not split over {world} processes")
    return global_batch // world


def class_index_path(cfg) -> str:
    return cfg.DATASETS.CLASS_INDEX or os.path.join(cfg.DATASETS.DATA_DIR, f"{cfg.DATASETS.SOURCE}_class_index.json")


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one named data stream of a run: the source and target loaders draw independent
    orders and augmentations (with one seed for both, source image i would always meet target
    image i, with the same flip and jitter decisions)."""
    return (int(seed) * 1_000_003 + zlib.crc32(stream.encode())) % (2**31 - 1)


def build_train_loader(cfg, dataset: SegmentationDataset, global_batch: int, start_iter: int = 0,
                       class_balanced: bool = False, stream: str = "source") -> DataLoader:
    """An endless loader of this process's share of `global_batch`, resumable at `start_iter`.

    `stream` names the loader's random stream (`source`, `target`): seeded by SEED and the name.
    With SOLVER.ACCUM_STEPS = k it yields micro-batches of local batch / k (k per iteration); the
    sample stream and the resume position (iteration × local batch) are those of k = 1."""
    batch = local_batch_size(global_batch)
    kwargs = dict(seed=stream_seed(cfg.SEED, stream), rank=comm.get_rank(), world_size=comm.get_world_size(),
                  start=start_iter * batch)
    accum = int(cfg.SOLVER.ACCUM_STEPS)
    if accum < 1 or batch % accum:
        raise ValueError(f"SOLVER.ACCUM_STEPS {accum} does not divide this process's batch {batch} "
                         f"(global {global_batch} over {comm.get_world_size()} process(es))")
    if class_balanced:
        names = [os.path.basename(p) for p, _ in dataset.items]
        index_path = class_index_path(cfg)
        if not os.path.isfile(index_path):  # built once, on first use
            from .class_index import write_class_index
            write_class_index(dataset, index_path, cfg.MODEL.NUM_CLASSES, cfg.DATASETS.SOURCE)
        file_classes = load_class_index(index_path, names, cfg.MODEL.NUM_CLASSES)
        sampler = ClassBalancedSampler(file_classes, cfg.MODEL.NUM_CLASSES,
                                       block=cfg.DATASETS.CLASS_BALANCE_BLOCK, **kwargs)
    else:
        sampler = InfiniteSampler(len(dataset), shuffle=True, **kwargs)
    workers = cfg.DATALOADER.NUM_WORKERS
    pin = bool(cfg.DATALOADER.PIN_MEMORY) and torch.cuda.is_available()
    extra = {"prefetch_factor": cfg.DATALOADER.PREFETCH_FACTOR} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch // accum, sampler=sampler, num_workers=workers, drop_last=True,
                      persistent_workers=bool(cfg.DATALOADER.PERSISTENT_WORKERS) and workers > 0, pin_memory=pin,
                      worker_init_fn=_worker_init(cfg), **extra)


def _worker_init(cfg):
    """Workers ignore SOLVER.STOP_SIGNALS: the main process stops the stage cleanly on them (a signal sent
    to every process of a job would otherwise kill the workers and fail the loader mid-iteration)."""
    return ignore_stop_signals(signal_numbers(cfg.SOLVER.STOP_SIGNALS))


def collate_mixed_labels(items: list[dict]) -> dict:
    """Batch test items: images (all resized to one size) stacked; labels stacked when they share a
    size, else kept as a list of H_i×W_i tensors (each image is evaluated at its own label size)."""
    labels = [item["label"] for item in items]
    if len({tuple(label.shape) for label in labels}) <= 1:
        return default_collate(items)
    batch = default_collate([{k: v for k, v in item.items() if k != "label"} for item in items])
    batch["label"] = labels
    return batch


def build_test_loader(cfg, dataset: SegmentationDataset, batch_size: Optional[int] = None,
                      shard: bool = True, start: int = 0) -> DataLoader:
    """A finite, ordered loader; with `shard`, each process takes every world-th image. Labels of
    mixed sizes in one batch come as a list (`collate_mixed_labels`). `start`: images of this process's
    share to leave out at its beginning (those an interrupted pass has done)."""
    indices = list(range(len(dataset)))
    if shard:
        indices = indices[comm.get_rank()::comm.get_world_size()]
    indices = indices[start:]
    return DataLoader(dataset, batch_size=batch_size or cfg.TEST.BATCH_SIZE, sampler=indices,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, shuffle=False, collate_fn=collate_mixed_labels,
                      worker_init_fn=_worker_init(cfg))
