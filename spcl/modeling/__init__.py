"""DeepLab-v2 models (SPEC §2): encoders, ASPP classifier, segmentor, output-space discriminator."""
from .aspp import ASPPClassifier
from .backbones import BACKBONES, build_backbone
from .build import build_discriminator, build_segmentor
from .discriminator import OutputDiscriminator
from .segmentor import Segmentor
from .weights import load_segmentor_weights

__all__ = ["BACKBONES", "build_backbone", "build_segmentor", "build_discriminator", "ASPPClassifier",
           "OutputDiscriminator", "Segmentor", "load_segmentor_weights"]
