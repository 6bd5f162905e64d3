"""Terminal rewards of a strategy (a registry, chosen with ``--reward``), and the per-layer latency table.

- ``accuracy``: validation top-1 as a fraction (AMC's reward for a fixed budget).
- ``log-macs``: ``-error * log(MACs)`` (AMC's resource-aware variant).
- ``latency``: ``-error * log(latency in ms)``, the latency summed from per-layer timings measured on this
  device and cached per layer shape (a model is timed layer by layer once; later strategies reuse the timings).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils import benchmark

from dynprune.checkpoints import write_json
from dynprune.registry import Registry

if TYPE_CHECKING:
    from .evaluate import StrategyEvaluator


@dataclass(frozen=True)
class Reward:
    name: str
    fn: Callable[[float, float, float | None], float]  # (val_acc %, MACs, latency ms) -> reward
    needs_latency: bool
    description: str

    def __call__(self, val_acc: float, macs: float, latency_ms: float | None = None) -> float:
        return float(self.fn(val_acc, macs, latency_ms))


REWARDS: Registry[Reward] = Registry("reward")
REWARDS.add(Reward("accuracy", lambda acc, macs, ms: acc / 100.0, False, "validation top-1 (fraction)"))
REWARDS.add(
    Reward("log-macs", lambda acc, macs, ms: -(1.0 - acc / 100.0) * math.log(macs), False, "-error * log(MACs)"),
)
REWARDS.add(
    Reward(
        "latency",
        lambda acc, macs, ms: -(1.0 - acc / 100.0) * math.log(ms),
        True,
        "-error * log(measured latency in ms, batch 1, this device)",
    ),
)


def _layer_key(module: nn.Module, x: torch.Tensor) -> str:
    if isinstance(module, nn.Conv2d):
        return (
            f"conv{module.in_channels}-{module.out_channels}-k{module.kernel_size[0]}-s{module.stride[0]}"
            f"-p{module.padding[0]}-g{module.groups}-{x.shape[-2]}x{x.shape[-1]}-b{x.shape[0]}"
        )
    return f"linear{module.in_features}-{module.out_features}-b{x.shape[0]}"


class LatencyTable:
    """Milliseconds per layer shape, measured once on the current device and kept (optionally in a file)."""

    def __init__(self, path: Path | None = None, batch_size: int = 1, min_run_time: float = 0.02) -> None:
        self.path, self.batch_size, self.min_run_time = path, batch_size, min_run_time
        self.ms: dict[str, float] = {}
        if path is not None and path.is_file():
            self.ms = json.loads(path.read_text())

    def _time(self, module: nn.Module, x: torch.Tensor) -> float:
        timer = benchmark.Timer(stmt="m(x)", globals={"m": module, "x": x}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=self.min_run_time).median * 1e3

    def model_ms(self, evaluator: StrategyEvaluator, ratios: Mapping[str, float]) -> float:
        """Sum of the conv and linear layers' timings of the strategy's pruned model."""
        model = evaluator.pruned_model(ratios)
        inputs: list[tuple[nn.Module, torch.Tensor]] = []

        def record(module: nn.Module, args: tuple) -> None:
            inputs.append((module, args[0].detach()))

        handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        try:
            with torch.no_grad():
                model(torch.zeros(self.batch_size, *evaluator.input_shape))
        finally:
            for h in handles:
                h.remove()
        total, new = 0.0, False
        with torch.no_grad():
            for module, x in inputs:
                key = _layer_key(module, x)
                if key not in self.ms:
                    self.ms[key], new = self._time(module, x), True
                total += self.ms[key]
        if new and self.path is not None:
            write_json(self.path, self.ms)
        return total
