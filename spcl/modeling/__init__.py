"""DeepLab-v2 models (paper Sec. 4.1; docs/method.md "Model"): encoders, ASPP classifier, segmentor
(with full-resolution `predict`), output-space discriminator, weight loading."""
from .aspp import ASPPClassifier
from .backbones import BACKBONES, build_backbone
from .build import build_discriminator, build_segmentor, load_trained_segmentor
from .discriminator import OutputDiscriminator
from .segmentor import Segmentor, predict_probs
from .weights import load_segmentor_weights

__all__ = ["BACKBONES", "build_backbone", "build_segmentor", "build_discriminator", "load_trained_segmentor",
           "ASPPClassifier", "OutputDiscriminator", "Segmentor", "predict_probs", "load_segmentor_weights"]
