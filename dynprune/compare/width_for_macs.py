"""The width multiplier at which a zoo model's dense MACs match a target: compact rows and shallow members."""

from __future__ import annotations

import functools

import torch

from ..base import ConfigError
from ..cost import CostModel
from ..models import create_model
from ..solve import monotone_bracket


@functools.lru_cache(maxsize=64)  # the same (model, target) recurs for every seed
def width_for_macs(model: str, target_macs: float, in_channels: int, num_classes: int, image_size: int) -> float:
    """The width multiplier whose dense MACs are closest to ``target_macs`` without exceeding it (bisection)."""

    def macs(width: float) -> int:
        # On the meta device: shapes only, no weights, no kernels (a CPU forward pass compiles new oneDNN kernels
        # for every new channel count, ~0.5 s each).
        with torch.device("meta"):
            net = create_model(model, in_channels, num_classes, image_size, width=width)
        return CostModel.from_model(net, (in_channels, image_size, image_size)).dense_macs

    lo, hi = 0.05, 1.0  # never wider than the model's standard width: a compact model, not a bigger one
    if macs(lo) > target_macs:
        raise ConfigError(f"{model} costs more than {target_macs / 1e6:.2f}M MACs even at width {lo}")
    if macs(hi) <= target_macs:
        return hi
    width, _ = monotone_bracket(lambda w: macs(w) <= target_macs, lo, hi, 12)  # to < 0.001 of width
    return round(width, 4)
