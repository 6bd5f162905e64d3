"""LeNet-5: conv 5x5 -> pool -> conv 5x5 -> pool -> 3 linear layers."""

from __future__ import annotations

import torch
from torch import nn

from ..sites import ChannelSite
from .registry import SiteModel, register_model, scaled, with_recipe


class LeNet5(SiteModel):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = scaled(6, width), scaled(16, width)
        # The classic net sees 32x32 inputs; pad smaller images so conv2's pooled map is 5x5 as in the paper.
        pad = max(0, (32 - image_size) // 2)
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=pad)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU(inplace=True)
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(c2 * side * side, scaled(120, width))
        self.fc2 = nn.Linear(scaled(120, width), scaled(84, width))
        self.fc3 = nn.Linear(scaled(84, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)

    def channel_sites(self) -> list[ChannelSite]:
        return [
            ChannelSite("conv1", producer="conv1", bn=None, consumers=("conv2",)),
            ChannelSite("conv2", producer="conv2", bn=None, consumers=("fc1",)),
        ]


#: No BatchNorm: the one-cycle warm-up at ResNet's peak of 0.2 wastes the first epoch (train 21.6%, val 47.8%
#: after one epoch of 8,192 Fashion-MNIST images; 66.9% after two). Cosine at 0.1 with no warm-up: 69.2% after
#: one epoch, 73.4% after two (BENCHMARKS.md, "Default recipe per zoo model").
@register_model
@with_recipe(lr=0.1, schedule="cosine", warmup_epochs=0.0, weight_decay=5e-4)
def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: float = 1.0) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, width)
