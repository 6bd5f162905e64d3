"""CIFAR-style VGG with BatchNorm; the last max-pool is a global average pool so any input >= 16px works."""

from __future__ import annotations

import torch
from torch import nn

from ..sites import ChannelSite
from .registry import SiteModel, register_model, scaled, with_recipe

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


class VGG(SiteModel):
    def __init__(
        self, layout: list[int | str], in_channels: int, num_classes: int, image_size: int, width: float = 1.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self._convs: list[tuple[str, str]] = []  # (conv path, bn path) in forward order
        c = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled(int(item), width)
            i = len(layers)
            self._convs.append((f"features.{i}", f"features.{i + 1}"))
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def channel_sites(self) -> list[ChannelSite]:
        sites = []
        for k, (conv, bn) in enumerate(self._convs):
            consumer = self._convs[k + 1][0] if k + 1 < len(self._convs) else "classifier"
            sites.append(ChannelSite(conv, conv, bn, (consumer,)))
        return sites


#: VGG with BatchNorm: a lower peak than the ResNets (no identity paths to carry the signal at a high lr)
@register_model
@with_recipe(lr=0.05, schedule="onecycle", weight_decay=5e-4)
def vgg11(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: float = 1.0) -> VGG:
    return VGG(CONFIGS["vgg11"], in_channels, num_classes, image_size, width)


@register_model
@with_recipe(lr=0.05, schedule="onecycle", weight_decay=5e-4)
def vgg16(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: float = 1.0) -> VGG:
    return VGG(CONFIGS["vgg16"], in_channels, num_classes, image_size, width)
