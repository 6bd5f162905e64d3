"""MobileNetV2 (Sandler et al. 2018): inverted residuals, expand 1x1 -> depthwise 3x3 -> project 1x1.

For small images (<= 64 px) the stem and the second stage keep stride 1, as CIFAR ports do, so the final
feature map is not smaller than one pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sites import ChannelSite
from .registry import SiteModel, register_model, with_recipe

# (expansion t, output channels c, repeats n, first stride s), from the paper's table 2
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 (the reference implementation's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden, 1, 1) if expand != 1 else None
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = conv_bn(hidden, cout, 1, 1, act=False)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.dw(out))
        return x + out if self.use_residual else out


class MobileNetV2(SiteModel):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        small = image_size <= 64
        c = divisible(32 * width)
        self.stem = conv_bn(in_channels, c, 3, 1 if small else 2)
        blocks = []
        for stage, (t, ch, n, s) in enumerate(SETTINGS):
            out = divisible(ch * width)
            for i in range(n):
                stride = s if i == 0 else 1
                if small and stage == 1:
                    stride = 1
                blocks.append(InvertedResidual(c, out, stride, t))
                c = out
        self.blocks = nn.Sequential(*blocks)
        last = divisible(1280 * max(1.0, width))
        self.head = conv_bn(c, last, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))

    def channel_sites(self) -> list[ChannelSite]:
        sites = []
        for i, block in enumerate(self.blocks):
            b = f"blocks.{i}"
            dw = (f"{b}.dw.0", f"{b}.dw.1")
            project = (f"{b}.project.0",)
            if block.expand is not None:
                sites.append(ChannelSite(f"{b}.expand", f"{b}.expand.0", f"{b}.expand.1", project, dw))
            elif not block.use_residual:
                # t = 1: the stem's channels flow through this block's depthwise conv into its projection. Not a
                # site where the block adds them to its output (width < 0.5: cin == cout): the residual reads
                # every stem channel.
                sites.append(ChannelSite("stem", "stem.0", "stem.1", project, dw))
        return sites


#: MobileNetV2's paper uses a small weight decay (4e-5): the depthwise filters have few weights to regularise
@register_model
@with_recipe(lr=0.1, schedule="onecycle", weight_decay=4e-5)
def mobilenetv2(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(in_channels, num_classes, image_size, width)
