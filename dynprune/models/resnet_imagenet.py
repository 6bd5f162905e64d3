"""ImageNet-style ResNet-18 (7x7 stem, max-pool, projection shortcuts), for latency studies at 224x224."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sites import ChannelSite
from .registry import SiteModel, register_model, scaled, with_recipe


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + identity)


class ResNet18(SiteModel):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        planes = [scaled(p, width) for p in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = planes[0]
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(Block(c, p, stride), Block(p, p, 1)))
            c = p
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def channel_sites(self) -> list[ChannelSite]:
        return [
            ChannelSite(f"layer{i}.{j}.conv1", f"layer{i}.{j}.conv1", f"layer{i}.{j}.bn1", (f"layer{i}.{j}.conv2",))
            for i in range(1, 5)
            for j in range(2)
        ]


#: torchvision's ResNet recipe (peak lr 0.1, weight decay 1e-4) with the one-cycle schedule of the spine
@register_model
@with_recipe(lr=0.1, schedule="onecycle", weight_decay=1e-4)
def resnet18(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224, width: float = 1.0) -> ResNet18:
    return ResNet18(in_channels, num_classes, image_size, width)
