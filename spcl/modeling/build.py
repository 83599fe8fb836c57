"""Builders of the segmentor and the discriminator from the config (MODEL.*)."""
from __future__ import annotations

from typing import Optional

import torch

from .aspp import ASPPClassifier
from .backbones import build_backbone
from .discriminator import OutputDiscriminator
from .segmentor import Segmentor
from .weights import load_segmentor_weights


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
        load_segmentor_weights(model, m.WEIGHTS)
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
    load_segmentor_weights(model, path, trained=True)
    return model.to(device or torch.device("cpu")).eval()
