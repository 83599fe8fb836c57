"""DeepLab-v2 ResNet encoders (docs/method.md "Model"): torchvision ResNets with layer3/layer4 dilated (stride 8).

ResNet-50/101/152 use torchvision's `replace_stride_with_dilation=[False, True, True]`; ResNet-18/34
(BasicBlock, which torchvision will not dilate) get the same strides and dilations set on their convs,
so the small CPU backbones share the code path and output stride. Parameter and buffer names are
torchvision's, so an ImageNet state dict of torchvision loads unchanged.
"""
from __future__ import annotations

import torch.nn as nn
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    """Stride 1 and `dilation` on every 3x3 conv of a BasicBlock layer (downsample stride 1)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


class ResNetEncoder(nn.Module):
    """ResNet trunk without avgpool/fc; output B×C×H/8×W/8 (C = 2048, or 512 for ResNet-18/34).

    Args:
        name: one of RESNETS.
        frozen_bn: BatchNorm as FrozenBatchNorm2d (affine and statistics are buffers).
    """

    def __init__(self, name: str = "resnet101", frozen_bn: bool = True):
        super().__init__()
        if name not in RESNETS:
            raise KeyError(f"unknown ResNet '{name}'; expected one of {sorted(RESNETS)}")
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        ctor = getattr(torchvision.models, name)
        if name in ("resnet18", "resnet34"):
            net = ctor(weights=None, norm_layer=norm)
            _dilate_basic_layer(net.layer3, 2)
            _dilate_basic_layer(net.layer4, 4)
        else:
            net = ctor(weights=None, norm_layer=norm, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = RESNETS[name]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # B×64×H/4×W/4
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # B×C×H/8×W/8
