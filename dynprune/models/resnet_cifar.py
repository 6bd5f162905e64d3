"""CIFAR-style ResNets (He et al. 2016, section 4.2): 3 stages of 6n+2 layers, option-A shortcuts.

Option A (zero-padded identity shortcuts) keeps the MAC counts that the pruning literature reports
(ResNet-56: ~125.5M MACs at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sites import ChannelSite
from .registry import SiteModel, register_model, scaled, with_recipe


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels (no parameters, no MACs)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_lo = (planes - in_planes) // 2
        self.pad_hi = planes - in_planes - self.pad_lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_lo, self.pad_hi))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, mid: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(in_planes, planes, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(SiteModel):
    def __init__(self, depth: int, in_channels: int, num_classes: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        planes = [scaled(16, width), scaled(32, width), scaled(64, width)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for i, p in enumerate(planes):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, p, p, stride))
                in_planes = p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    def channel_sites(self) -> list[ChannelSite]:
        sites = []
        for stage in ("layer1", "layer2", "layer3"):
            for j in range(len(getattr(self, stage))):
                p = f"{stage}.{j}"
                sites.append(ChannelSite(f"{p}.conv1", f"{p}.conv1", f"{p}.bn1", (f"{p}.conv2",)))
        return sites


def _factory(depth: int):
    def build(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: float = 1.0):
        return CifarResNet(depth, in_channels, num_classes, image_size, width)

    build.__name__ = f"resnet{depth}"
    return build


#: the CIFAR ResNet recipe, measured on ResNet-20 (93.29% on Fashion-MNIST in 9 epochs, BENCHMARKS.md); these
#: are also the general defaults of TrainConfig
CIFAR_RESNET_RECIPE = with_recipe(lr=0.2, schedule="onecycle", weight_decay=5e-4)
#: deeper CIFAR ResNets learn slower at 0.2 (one short epoch, 4 seeds: BENCHMARKS.md, "Default recipe per zoo
#: model: one short epoch each"): ResNet-56 at He et al.'s peak lr 0.1 (0.2 was erratic, 10.7-66.7% val);
#: ResNet-110 at 0.05 (57.2 +- 7.3% val where 0.1 gave 37.1 +- 8.3% and 0.2 30.6 +- 5.2%, at chance with batch
#: 128; He et al. needed a 0.01 warm-up for it)
RESNET56_RECIPE = with_recipe(lr=0.1, schedule="onecycle", weight_decay=5e-4)
RESNET110_RECIPE = with_recipe(lr=0.05, schedule="onecycle", weight_decay=5e-4)
#: one block per stage: a cheap first member for a confidence cascade, whose time at 28x28 follows its few layers
#: where a pruned ResNet-20's does not (BENCHMARKS, "A shallow first member")
resnet8 = register_model(CIFAR_RESNET_RECIPE(_factory(8)))
resnet20 = register_model(CIFAR_RESNET_RECIPE(_factory(20)))
resnet32 = register_model(CIFAR_RESNET_RECIPE(_factory(32)))
resnet56 = register_model(RESNET56_RECIPE(_factory(56)))
resnet110 = register_model(RESNET110_RECIPE(_factory(110)))
