"""The optimiser and learning-rate schedule of a run (SGD with Nesterov momentum; one-cycle or cosine)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .methods import ParamGroup


@dataclass(frozen=True)
class OptimSettings:
    """What the optimisation of a run needs from its config."""

    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    label_smoothing: float
    schedule: str
    warmup_epochs: float

    @classmethod
    def from_config(cls, cfg: Any) -> OptimSettings:
        return cls(
            cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.label_smoothing, cfg.schedule, cfg.warmup_epochs
        )


def make_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, special: Sequence[ParamGroup] = ()
) -> torch.optim.SGD:
    # Weight decay on BN scales and biases only hurts; the usual split applies it to weights of rank > 1.
    taken = {id(p) for group in special for p in group.params}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [
        {"params": [p for p in trainable if p.dim() > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.dim() <= 1], "weight_decay": 0.0},
    ]
    for group in special:
        params = [p for p in group.params if p.requires_grad]
        scaled = lr * group.lr_scale
        if group.weight_decay is not None:
            split = [(params, group.weight_decay)]
        else:
            split = [([p for p in params if p.dim() > 1], weight_decay), ([p for p in params if p.dim() <= 1], 0.0)]
        # the run's two groups always exist (a resumed optimizer state matches them); added ones only when used
        groups += [{"params": ps, "lr": scaled, "weight_decay": wd} for ps, wd in split if ps]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)


def make_schedule(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "onecycle" and total_steps >= 8:  # fewer steps: OneCycleLR's phases collapse (division by zero)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=max(total_steps, 1),
            pct_start=0.25,
            div_factor=10.0,
            final_div_factor=100.0,
        )

    def cosine(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
