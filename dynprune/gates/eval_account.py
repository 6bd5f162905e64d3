"""What the gates did over one evaluation pass: each site's open rate, how many inputs opened each channel, and
the distinct channel sets (``sets.py``): the figures of a run's validation and test passes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .dynamism import conditional_share
from .sets import ChannelSetCounter


class EvalAccount:
    def __init__(self) -> None:
        self.rates: dict[str, float] = {}  # site -> sum over inputs of the share of its channels open
        self.channel_open: dict[str, torch.Tensor] = {}  # site -> [C] inputs that opened each channel
        self.sets = ChannelSetCounter()  # distinct channel sets per site
        self.count = 0

    def start(self, sites: Iterable[str]) -> None:
        self.rates = dict.fromkeys(sites, 0.0)
        self.channel_open = {}
        self.sets.reset()
        self.count = 0

    def add(self, masks: Mapping[str, torch.Tensor], batch_size: int) -> None:
        """One evaluated batch's decisions, [B, C] per site."""
        for name, m in masks.items():
            self.rates[name] += m.float().mean(dim=1).sum().item()
            opened = m.detach().double().sum(dim=0).cpu()
            self.channel_open[name] = self.channel_open.get(name, 0) + opened
        self.sets.add(masks)
        self.count += batch_size

    def open_rates(self) -> dict[str, float]:
        """Per-site open rate over the pass."""
        return {k: v / max(self.count, 1) for k, v in self.rates.items()}

    def conditional_shares(self) -> dict[str, float]:
        """Per site, the share of channels open for some inputs of the pass but not all (``dynamism.py``)."""
        seen = max(self.count, 1)
        return {k: conditional_share(v / seen) for k, v in self.channel_open.items()}

    def sets_summary(self) -> dict[str, dict[str, Any]]:
        return self.sets.summary()
