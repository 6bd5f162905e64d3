"""How a pruner's masks evolve over a fine-tune: set up before training, changed at epoch ends, fixed at the end.

``ScheduledPruning`` (every mask pruner's default): ``steps`` pruning events spread evenly over the first half
of the fine-tuning epochs, the ratio ramping linearly or cubically (AGP: r_t = r (1 - (1 - t/N)^3)) up to its
final value; the last event is the full ratio. A pruner with another life cycle (SFP: ``prune/sfp.py``) brings
its own subclass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..cost import CostModel
from ..sites import ChannelSite
from .masks import channel_mask


def ramp(final: float, step: int, steps: int, kind: str) -> float:
    t = step / steps
    return final * (t if kind == "linear" else 1 - (1 - t) ** 3)


class PruneProcess:
    """The base: one-shot pruning at the start, nothing afterwards."""

    def __init__(
        self,
        pruner: Any,  # prune.pruners.Pruner
        sites: Sequence[ChannelSite],
        ratios: Mapping[str, float],
        cost: CostModel,
        steps: int = 1,
        schedule: str = "cubic",
    ) -> None:
        self.pruner, self.sites, self.ratios, self.cost = pruner, list(sites), dict(ratios), cost
        self.steps, self.schedule = max(1, steps), schedule

    def start(self, model: nn.Module) -> None:
        """Called in ``prepare``, before any checkpoint is loaded: the masks a checkpoint will fill."""
        self.pruner.apply(model, self.sites, self.ratios, self.cost)

    def begin(self, epochs: int) -> None:
        """Called before the first step with the number of epochs of the run."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Called after every epoch (``epoch`` = epochs done)."""

    def finish(self, model: nn.Module) -> None:
        """Called once after the last epoch: the masks are final afterwards."""

    def keep_fractions(self, model: nn.Module) -> dict[str, float]:
        """Kept fraction of every site's channels now (structured pruners)."""
        return {s.name: channel_mask(model, s).mean().item() for s in self.sites}

    def keep_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {s.name: channel_mask(model, s) for s in self.sites}


class ScheduledPruning(PruneProcess):
    """One-shot (``steps`` = 1) or ``steps`` events over the first half of the epochs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[int] = []
        self.done_events = 0

    def start(self, model: nn.Module) -> None:
        self._prune_to(model, 1 if self.steps > 1 else None)

    def begin(self, epochs: int) -> None:
        span = max(1, epochs // 2)
        # Epochs (1-based, counted at their end) after which events 2..N happen (event 1 happened in start);
        # more events than epochs share epochs, and the last one always falls within the run, at ``span``.
        self.events = [max(1, round(span * k / (self.steps - 1))) for k in range(1, self.steps)]

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if epoch in self.events:  # the latest event due by now: events sharing an epoch end at the last of them
            self._prune_to(model, 1 + sum(e <= epoch for e in self.events))

    def _ratios_at(self, event: int | None) -> dict[str, float]:
        if event is None:
            return dict(self.ratios)
        return {k: ramp(v, event, self.steps, self.schedule) for k, v in self.ratios.items()}

    def _prune_to(self, model: nn.Module, event: int | None) -> None:
        target = self._ratios_at(event)
        if self.pruner.structured:
            self.pruner.apply(model, self.sites, target, self.cost)
        else:
            # torch's pruning containers prune the still-unpruned weights: give each event its increment.
            previous = self._ratios_at(self.done_events) if event and self.done_events else dict.fromkeys(target, 0.0)
            increment = {k: (target[k] - previous[k]) / (1 - previous[k]) for k in target}
            self.pruner.apply(model, self.sites, increment, self.cost)
        self.done_events = event or self.steps
