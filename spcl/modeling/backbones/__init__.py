"""Encoders of DeepLab-v2: dilated ResNets and LargeFOV VGG-16, all of output stride 8."""
from .resnet import RESNETS, ResNetEncoder
from .vgg import VGG16Encoder

BACKBONES = tuple(RESNETS) + ("vgg16",)


def build_backbone(name: str, frozen_bn: bool = True):
    """An encoder by name (`resnet18` … `resnet152`, `vgg16`); `.out_channels` gives C."""
    if name == "vgg16":
        return VGG16Encoder()
    if name in RESNETS:
        return ResNetEncoder(name, frozen_bn)
    raise KeyError(f"unknown MODEL.BACKBONE '{name}'; expected one of {BACKBONES}")


__all__ = ["BACKBONES", "build_backbone", "ResNetEncoder", "VGG16Encoder"]
