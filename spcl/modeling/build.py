"""Builders of the segmentor and the discriminator from the config (MODEL.*)."""
from __future__ import annotations

from typing import Optional

import torch

from .aspp import ASPPClassifier
from .backbones import build_backbone
from .discriminator import OutputDiscriminator
from .segmentor import Segmentor
from .weights import load_segmentor_weights, read_checkpoint


def build_segmentor(cfg, freeze_bn: Optional[bool] = None, load_weights: bool = True) -> Segmentor:
    """DeepLab-v2 of MODEL.BACKBONE with MODEL.NUM_CLASSES outputs, MODEL.WEIGHTS loaded if set.

    Args:
        freeze_bn: overrides MODEL.FREEZE_BN (the self_train stage trains BatchNorm).
        load_weights: load MODEL.WEIGHTS (off when a checkpoint will be restored instead).
    Returns:
        a Segmentor whose forward(images B×3×H×W) gives {"feat": B×C×h×w, "logits": B×K×h×w}, h = H/8.
    """
    m = cfg.MODEL
    frozen = m.FREEZE_BN if freeze_bn is None else freeze_bn
    backbone = build_backbone(m.BACKBONE, frozen_bn=frozen)
    head = ASPPClassifier(backbone.out_channels, m.NUM_CLASSES, m.ASPP_DILATIONS, m.HEAD_INIT_STD)
    model = Segmentor(backbone, head)
    if load_weights and m.WEIGHTS:
        load_naming_its_config(model, m.WEIGHTS)
    if m.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_discriminator(cfg) -> OutputDiscriminator:
    """The output-space discriminator of the adv_warmup stage."""
    return OutputDiscriminator(cfg.MODEL.NUM_CLASSES, cfg.MODEL.DISC_CHANNELS)


def load_trained_segmentor(cfg, path: str, device: Optional[torch.device] = None,
                           freeze_bn: Optional[bool] = None) -> Segmentor:
    """The segmentor of `cfg` with the weights of checkpoint `path`, on `device`, in eval mode: the
    one way tools, stages and benchmarks load a trained model for inference. `freeze_bn` overrides
    MODEL.FREEZE_BN (False: nn.BatchNorm2d, whose statistics can be re-estimated; same outputs in eval
    mode)."""
    if not path:
        raise ValueError("a trained model is needed: give a checkpoint (--checkpoint, or MODEL.WEIGHTS)")
    model = build_segmentor(cfg, freeze_bn=freeze_bn, load_weights=False)
    stored = load_naming_its_config(model, path, trained=True)
    warn_if_trained_otherwise(cfg, path, stored)
    return model.to(device or torch.device("cpu")).eval()


def load_naming_its_config(model: Segmentor, path: str, trained: bool = False) -> Optional[str]:
    """`load_segmentor_weights`, whose error for a file that does not fit the model says what the file was trained
    as (MODEL.BACKBONE, MODEL.NUM_CLASSES), when it records its config: for a trained model given to the tools
    and for MODEL.WEIGHTS of a training stage alike. Returns the recorded config (YAML text) or None."""
    obj = read_checkpoint(path)
    stored = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), str) else None
    try:
        load_segmentor_weights(model, path, trained=trained, obj=obj)
    except ValueError as e:  # a model that does not fit: say what the file was trained as, when it records it
        recorded = recorded_model(stored)
        if not recorded or all(f"{k} {v}" in str(e) for k, v in recorded.items()):
            raise
        raise ValueError(f"{e}; it was trained with " + ", ".join(f"{k} {v}" for k, v in recorded.items()) +
                         f": use its config (python tools/convert_checkpoint.py --print-config {path})") from e
    return stored


# keys that change what a trained model predicts without changing the shapes of its weights
PREDICTION_KEYS = ("INPUT.PIXEL_MEAN", "INPUT.PIXEL_STD", "INPUT.TO_BGR255", "MODEL.ASPP_DILATIONS", "INPUT.TEST_SIZE")


def trained_otherwise(cfg, stored_yaml: str) -> list:
    """`KEY: then X, now Y` for each of PREDICTION_KEYS whose value in `cfg` differs from the config a model
    was trained with (`stored_yaml`, as checkpoints record it); keys the recorded config lacks are skipped."""
    import yaml

    stored = yaml.safe_load(stored_yaml)
    out = []
    for key in PREDICTION_KEYS:
        section, name = key.split(".")
        part = stored.get(section) if isinstance(stored, dict) else None
        if isinstance(part, dict) and name in part and part[name] != cfg[section][name]:
            out.append(f"{key}: {part[name]} then, {cfg[section][name]} now")
    return out


def recorded_model(stored_yaml: Optional[str]) -> dict:
    """{MODEL.BACKBONE, MODEL.NUM_CLASSES: values} of the config a checkpoint records ({} without one)."""
    import yaml

    stored = yaml.safe_load(stored_yaml) if stored_yaml else None
    model = stored.get("MODEL") if isinstance(stored, dict) else None
    if not isinstance(model, dict):
        return {}
    return {f"MODEL.{k}": model[k] for k in ("BACKBONE", "NUM_CLASSES") if k in model}


def warn_if_trained_otherwise(cfg, path: str, stored_yaml: Optional[str]) -> None:
    """Log a warning naming the keys (PREDICTION_KEYS) on which `cfg` differs from the config checkpoint
    `path` was trained with (`stored_yaml`, None when it records none): the weights load, but the model
    sees its inputs otherwise than it learnt to."""
    import logging

    differ = trained_otherwise(cfg, stored_yaml) if stored_yaml else []
    if differ:
        logging.getLogger("spcl").warning(
            "%s was trained with another config for %s; its predictions change with these. The config it was "
            "trained with: python tools/convert_checkpoint.py --print-config %s", path, "; ".join(differ), path)
