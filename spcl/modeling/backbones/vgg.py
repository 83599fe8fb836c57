"""DeepLab-LargeFOV VGG-16 encoder (docs/method.md "Model"): torchvision VGG-16 features with pool4/pool5 removed
(output stride 8), conv5_x dilated by 2, then fc6 (3x3, 512→1024, dilation 4) and fc7 (3x3,
1024→1024, dilation 4), each followed by ReLU. 1024 output channels.

The removed pools are kept as `nn.Identity` so `features.N.*` keys match torchvision's VGG-16 state
dict; fc6/fc7 have no ImageNet counterpart of this shape and start from N(0, 0.01).
"""
from __future__ import annotations

import torch.nn as nn
import torchvision

POOL4, POOL5 = 23, 30
CONV5 = (24, 26, 28)


class VGG16Encoder(nn.Module):
    """VGG-16 trunk; output B×1024×H/8×W/8."""

    def __init__(self):
        super().__init__()
        # torchvision's VGG-16 `features` with its init, without building the 120M-parameter classifier
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        features[POOL4] = nn.Identity()
        features[POOL5] = nn.Identity()
        for i in CONV5:
            features[i].dilation = (2, 2)
            features[i].padding = (2, 2)
        self.features = features
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=4, dilation=4)
        self.fc7 = nn.Conv2d(1024, 1024, 3, padding=4, dilation=4)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.fc6, self.fc7):
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)
        self.out_channels = 1024

    def forward(self, x):
        x = self.features(x)  # B×512×H/8×W/8
        return self.relu(self.fc7(self.relu(self.fc6(x))))  # B×1024×H/8×W/8
