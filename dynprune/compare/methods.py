"""What each compared method means as training runs (a registry): the overrides of one cell's TrainConfig.

Every method that starts from the dense model gets the same fine-tune budget (``epochs``, ``lr``); models
trained from scratch (the dense model, and the compact architectures that answer "why not just train a smaller
network?") get ``dense_epochs`` and ``dense_lr``. ``rl`` first searches a policy (``python -m agents.search``,
run as a subprocess: dynprune never imports ``agents``) and then fine-tunes it like ``l1-filter``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError
from ..cost import CostModel
from ..models import create_model
from ..registry import Registry
from .config import CompareConfig


@dataclass(frozen=True)
class CompareMethod:
    name: str
    family: str  # dense | static | rl | dynamic | compact
    uses_target: bool
    from_dense: bool  # fine-tuned from the dense checkpoint (else trained from scratch)
    overrides: Callable[[CompareConfig, float], dict[str, Any]]  # (config, MAC target) -> TrainConfig values
    description: str


COMPARE_METHODS: Registry[CompareMethod] = Registry("compared method")


def _add(name: str, family: str, overrides: Callable[[CompareConfig, float], dict[str, Any]], description: str):
    uses_target, from_dense = family != "dense", family not in ("dense", "compact")
    COMPARE_METHODS.add(name, CompareMethod(name, family, uses_target, from_dense, overrides, description))


_add("dense", "dense", lambda cfg, t: {"epochs": cfg.dense_epochs, "lr": cfg.dense_lr}, "the unpruned model")
for _name in ("l1-filter", "global-filter", "sfp"):
    _add(
        _name,
        "static",
        lambda cfg, t, n=_name: {"prune": n, "target_macs": t, "hard": True},
        f"static {_name}, channels removed physically (--hard)",
    )
_add(
    "global-unstructured",
    "static",
    lambda cfg, t: {"prune": "global-unstructured", "target_macs": t},
    "one magnitude threshold over all weights (MACs counted as nonzero-weight MACs; no real speed-up)",
)


def _gated(gate: str) -> Callable[[CompareConfig, float], dict[str, Any]]:
    def overrides(cfg: CompareConfig, t: float) -> dict[str, Any]:
        # Gates must reach the budget within the shared (often short) fine-tune: the target slides in over the
        # first quarter, and gumbel's noise fades over the second half so training ends on the test decisions.
        # Measured on a 2-epoch fine-tune at 0.5: 30.6% top-1 with the long-run defaults, 80.9% with these.
        return {
            "gate": gate,
            "target_macs": t,
            "budget_weight": cfg.gate_budget_weight,
            "budget_warmup_epochs": cfg.epochs / 4,
            "noise_fade": 0.5,
        }

    return overrides


for _name in ("gumbel", "ste"):
    _add(_name, "dynamic", _gated(_name), f"dynamic {_name} gates")
_add(
    "rl",
    "rl",
    lambda cfg, t: {"prune": "l1-filter", "hard": True},  # + ratios from the cell's own search
    "per-site ratios searched by an RL agent (agents.search), then fine-tuned as l1-filter",
)


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
    for _ in range(12):  # the interval shrinks to < 0.001 of width
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(mid) <= target_macs else (lo, mid)
    return round(lo, 4)


def _compact(model: str | None) -> Callable[[CompareConfig, float], dict[str, Any]]:
    def overrides(cfg: CompareConfig, t: float) -> dict[str, Any]:
        # The width is solved in plan.py (it needs the data set's shape); here only what does not depend on it.
        return {"model": model or cfg.model, "epochs": cfg.dense_epochs, "lr": cfg.dense_lr}

    return overrides


_add("narrow", "compact", _compact(None), "the same model at a width multiplier of matched MACs, from scratch")
_add("mobilenetv2", "compact", _compact("mobilenetv2"), "MobileNetV2 at a width of matched MACs, from scratch")
