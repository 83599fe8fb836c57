"""Loading initial weights from a local file (never downloaded): a torchvision ImageNet state dict of
the backbone, a checkpoint/state dict of this project's segmentor, or a checkpoint of the authors'
released code (`{"feature_extractor", "classifier"}`, SPCL/FADA; mapped by `released.py`).

A segmentation checkpoint (ours or released) must fill every model tensor: missing keys raise,
listing them, and must not hold tensors the model lacks: a ResNet-101 checkpoint loaded as a ResNet-50, or a
four-branch ASPP head loaded as three, would otherwise run a silently truncated network. An ImageNet file
may leave only what ImageNet has no counterpart for missing (the ASPP head, VGG's fc6/fc7) and hold only
its classifier besides (logged). A shape mismatch raises naming the key, both shapes and the file."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn

from ..utils.io import where_read
from ..utils.safe_load import UntrustedCheckpointError, load_checkpoint
from .released import convert_released, find_released

logger = logging.getLogger("spcl")


def strip_prefix(state: dict, prefix: str) -> dict:
    """Remove `prefix` from every key that has it (e.g. DDP's 'module.')."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def model_in_folder(folder: str) -> Optional[str]:
    """The final model a folder given in place of a checkpoint most likely means: its `model_final.pth`
    (a checkpoints folder) or `checkpoints/model_final.pth` (a stage folder); None when it has neither."""
    for candidate in (os.path.join(folder, "model_final.pth"), os.path.join(folder, "checkpoints", "model_final.pth")):
        if os.path.isfile(candidate):
            return candidate
    return None


def read_checkpoint(path: str, mmap: bool = False) -> dict:
    """A local checkpoint or weights file, loaded to CPU without running code from it (`load_checkpoint`),
    with a clear error when it is missing, unreadable or refused. `mmap`: map the tensors (cheap)."""
    if path and os.path.isdir(path):
        final = model_in_folder(path)
        hint = f": did you mean {final}?" if final else "; give a checkpoint or weights file"
        raise IsADirectoryError(f"weights file {path!r} is a folder{hint}")
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}{where_read(path)}")
    try:
        return load_checkpoint(path, mmap=mmap)
    except UntrustedCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling error means an unusable file
        raise IOError(f"cannot read weights file {path}: {e}") from e


# what a file holds that `weights_kind` does not call a trained model, for the errors of every loader and tool
NOT_A_MODEL = {"imagenet": "backbone weights only (an ImageNet file: no segmentation head)",
               "prototypes": "class prototypes"}


def not_a_model(kind) -> str:
    """What a file of `weights_kind` `kind` (not 'checkpoint' or 'released') holds, in words."""
    return NOT_A_MODEL.get(kind, "no model state")


# what an ImageNet backbone file cannot provide (left at init, logged)
IMAGENET_ABSENT = ("head.", "backbone.fc6.", "backbone.fc7.")
# what an ImageNet file holds that the segmentor has no use for: its classifier (ignored, logged)
IMAGENET_EXTRA = ("backbone.fc.", "backbone.classifier.")


def weights_kind(obj) -> str | None:
    """What a loaded file holds: 'checkpoint' (this project's, or a segmentor state dict), 'released' (the
    authors'), 'imagenet' (a backbone state dict: no segmentation head), 'prototypes' (the `prototypes`
    stage's file: class prototypes, no model), or None (no state dict at all)."""
    if not isinstance(obj, dict):
        return None
    if hasattr(obj.get("prototypes"), "shape") and "model" not in obj:
        return "prototypes"
    if find_released(obj) is not None:
        return "released"
    if isinstance(obj.get("model"), dict):
        return "checkpoint"
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    if any(isinstance(k, str) and k.removeprefix("module.").startswith("backbone.") for k in state):
        return "checkpoint"
    return "imagenet" if any(hasattr(v, "shape") for v in state.values()) else None


def segmentor_state_from(obj: dict) -> tuple[dict, str]:
    """The segmentor state dict in a loaded file, and its kind ('checkpoint' | 'released' | 'imagenet')."""
    kind = weights_kind(obj)
    if kind is None:
        raise ValueError(f"holds a {type(obj).__name__} without tensors, not a checkpoint or a state dict")
    if kind == "prototypes":
        raise ValueError(f"holds {not_a_model(kind)} (the `prototypes` stage's prototypes.pth, for PROTOTYPE.PATH), "
                         "not model weights")
    if kind == "released":
        state, info = convert_released(obj)
        logger.info("released SPCL/FADA checkpoint (%s feature extractor)%s", info["backbone"],
                    ": BN running_var − 1e-5 (their FrozenBatchNorm2d has no eps)" if info["bn_eps_compensated"] else "")
        if info["bn_channels_below_eps"]:
            logger.warning("%d BN channels have running_var below 1e-5: not representable with eps, clamped",
                           info["bn_channels_below_eps"])
        return state, "released"
    if isinstance(obj.get("model"), dict):
        return strip_prefix(obj["model"], "module."), kind
    state = strip_prefix(obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj, "module.")
    return (state, kind) if kind == "checkpoint" else ({"backbone." + k: v for k, v in state.items()}, kind)


def load_segmentor_weights(model: nn.Module, path: str, trained: bool = False, obj: Optional[dict] = None) -> dict:
    """Load `path` into a Segmentor; returns {"missing": [...], "unexpected": [...], "kind": str}.
    `trained`: the file must be a trained segmentor (a checkpoint, ours or released), not an ImageNet
    backbone file, whose head would be left at its random init. `obj`: the file as `read_checkpoint`
    returned it, when the caller has read it already."""
    obj = read_checkpoint(path) if obj is None else obj
    try:
        state, kind = segmentor_state_from(obj)
    except ValueError as e:
        raise ValueError(f"weights file {path} {e}") from e
    if trained and kind == "imagenet":
        raise ValueError(f"weights file {path} holds {not_a_model(kind)}, and a trained model is needed: give a "
                         "checkpoint, e.g. a stage's checkpoints/model_final.pth")
    return load_state(model, state, path, kind)


def load_state(model: nn.Module, state: dict, path: str, kind: str) -> dict:
    """Load a segmentor state dict (`kind` as from `segmentor_state_from`, read from `path`) into `model`
    once it fits: every shape equal, no tensor missing and none left over, except what an ImageNet file
    cannot provide (IMAGENET_ABSENT) or holds besides (IMAGENET_EXTRA), and every value finite. Nothing is
    loaded otherwise, and the error names the file and the keys. Returns {"missing", "unexpected", "kind"}."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and hasattr(value, "shape") and own[key].shape != value.shape:
            raise ValueError(f"weights file {path}: key '{key}' has shape {tuple(value.shape)}, the model "
                             f"expects {tuple(own[key].shape)} (wrong MODEL.BACKBONE or MODEL.NUM_CLASSES?)")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    loaded = sum(k in own for k in state)
    if loaded == 0:
        raise ValueError(f"weights file {path}: none of its {len(state)} keys match the model "
                         f"(first key '{next(iter(state), '')}')")
    must_fill = missing if kind != "imagenet" else [k for k in missing if not k.startswith(IMAGENET_ABSENT)]
    if must_fill:
        raise ValueError(f"weights file {path} ({kind}) lacks {len(must_fill)} tensor(s) of the model: "
                         f"{_short(must_fill, 20)} (wrong MODEL.BACKBONE, or a truncated/partial checkpoint?)")
    surplus = unexpected if kind != "imagenet" else [k for k in unexpected if not k.startswith(IMAGENET_EXTRA)]
    if surplus:
        raise ValueError(f"weights file {path} ({kind}) holds {len(surplus)} tensor(s) the model does not have: "
                         f"{_short(surplus, 20)} (wrong MODEL.BACKBONE or MODEL.ASPP_DILATIONS?)")
    broken = [k for k, v in state.items() if k in own and torch.is_tensor(v) and v.is_floating_point()
              and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"weights file {path} ({kind}) holds NaN or infinite values in {len(broken)} tensor(s): "
                         f"{_short(broken)}; a model with them predicts nothing meaningful")
    model.load_state_dict(state, strict=False)
    logger.info("loaded %s weights from %s: %d tensors", kind, path, loaded)
    if missing:
        logger.info("missing keys (%d, left at init): %s", len(missing), _short(missing))
    if unexpected:
        logger.info("unexpected keys (%d, ignored): %s", len(unexpected), _short(unexpected))
    return {"missing": missing, "unexpected": unexpected, "kind": kind}


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", … ({len(keys) - n} more)" if len(keys) > n else "")
