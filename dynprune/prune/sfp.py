"""Soft filter pruning (SFP, He et al. 2018) as a pruning process with its own state.

After every epoch the lowest-ranked filters of each site (the L2 norm, or ``--prune-criterion``) are zeroed; with
no mask and BN untouched, gradients still reach them through BN's batch statistics and they may regrow (the point
of soft pruning). For the last ``final_fraction`` of the epochs the current lowest-ranked filters become a
permanent channel mask (BN and passthrough layers too) so the network is fine-tuned without them: removing them
only at the very end loses the constant their BN shift fed forward and costs tens of points of accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..sites import site_width
from .criteria import ChannelGroup, Criterion, L2Norm, keep_lowest_removed, lowest, make_criterion
from .masks import apply_channel_mask, channel_mask, current
from .process import PruneProcess
from .ratios import keep_fractions, removed


class SoftFilterPruning(PruneProcess):
    final_fraction = 0.25  # share of the epochs fine-tuned with the channels removed for good

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the pruner's ranking (--prune-criterion); SFP's own is the L2 norm (He et al. 2018)
        chosen = getattr(self.pruner, "criterion", None)
        self.criterion: Criterion = make_criterion(chosen) if chosen else L2Norm()
        self.hard_epoch: int | None = None  # epoch after which the zeroing becomes a mask

    def start(self, model: nn.Module) -> None:
        # All-ones masks from the start, so a checkpoint has the same keys before and after the hard epoch.
        for site in self.sites:
            apply_channel_mask(model, site, torch.ones(site_width(model, site)))

    def begin(self, epochs: int) -> None:
        self.hard_epoch = epochs - max(1, round(self.final_fraction * epochs)) if epochs > 1 else 1

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if self.hard_epoch is None or epoch < self.hard_epoch:
            self._soft_zero(model)
        elif epoch == self.hard_epoch:
            self._mask(model)

    def finish(self, model: nn.Module) -> None:
        if not any(channel_mask(model, s).min() < 1 for s in self.sites):  # a run too short to reach the hard epoch
            self._mask(model)

    def keep_fractions(self, model: nn.Module) -> dict[str, float]:
        return keep_fractions(self.cost, self.ratios)  # what stays once the zeroed filters are masked

    def _soft_zero(self, model: nn.Module) -> None:
        with torch.no_grad():
            for site in self.sites:
                producer = model.get_submodule(site.producer)
                weight, bias = current(producer, "weight"), current(producer, "bias")
                scores = self.criterion(ChannelGroup.of(model, site))
                drop = lowest(scores, removed(weight.shape[0], self.ratios[site.name]))
                weight[drop] = 0
                if bias is not None:
                    bias[drop] = 0

    def _mask(self, model: nn.Module) -> None:
        for site in self.sites:
            scores = self.criterion(ChannelGroup.of(model, site))
            n = removed(len(scores), self.ratios[site.name])
            apply_channel_mask(model, site, keep_lowest_removed(scores, n))
