"""Static pruning as a method on the training spine: prune (one-shot or on a schedule), fine-tune, optionally
remove the pruned channels physically (``--hard``).

Schedules: ``prune_steps`` pruning events spread evenly over the first half of the fine-tuning epochs, the ratio
ramping linearly or cubically (AGP: r_t = r (1 - (1 - t/N)^3)) up to its final value; the last event is the full
ratio. ``sfp`` instead zeroes the lowest-L2 filters after every epoch (they may regrow) and, for the last
quarter of the epochs, masks them for good (BN included) so the network is fine-tuned without them: removing
them only at the very end loses the constant their BN shift fed forward and costs tens of points of accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..cost import CostModel
from ..methods import Method, register_method
from ..sites import site_width, slice_sites
from .criteria import L2Norm, lowest
from .masks import apply_channel_mask, channel_mask, current, make_permanent, prunable_weights, sparsity
from .pruners import get_pruner, keep_lowest_removed
from .ratios import keep_fractions, removed

SFP = "sfp"
SFP_FINAL_FRACTION = 0.25  # share of the epochs fine-tuned with SFP's channels removed for good


def ramp(final: float, step: int, steps: int, kind: str) -> float:
    t = step / steps
    return final * (t if kind == "linear" else 1 - (1 - t) ** 3)


@register_method("static")
class StaticPruneMethod(Method):
    def __init__(
        self,
        prune: str,
        ratios: Mapping[str, float] | None = None,
        resolve_ratios: Any = None,
        steps: int = 1,
        schedule: str = "cubic",
        hard: bool = False,
    ) -> None:
        self.name = prune
        self.sfp = prune == SFP
        self.pruner = None if self.sfp else get_pruner(prune)
        self.structured = self.sfp or self.pruner.structured
        self._ratios = dict(ratios) if ratios else None
        self._resolve = resolve_ratios  # (cost) -> ratios, when they depend on the model's cost
        self.steps, self.schedule, self.hard = max(1, steps), schedule, hard
        self.events: list[int] = []
        self.done_events = 0
        self.site_keep: dict[str, list[int]] | None = None
        self.final_fractions: dict[str, float] | None = None
        self.macs_nonzero: float | None = None
        self.sfp_hard_epoch: int | None = None  # epoch after which SFP's zeroing becomes a mask

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
        super().prepare(model, input_shape)
        self.sites = model.channel_sites()
        if self._ratios is not None:
            self.ratios = self._ratios
        elif self.pruner is not None and self.pruner.macs_curve is not None:
            self.ratios = self._resolve(self.cost, self.structured, self.pruner.macs_curve(model, self.cost))
        else:
            self.ratios = self._resolve(self.cost, self.structured)
        if self.sfp:
            # All-ones masks from the start, so a checkpoint has the same keys before and after the hard epoch.
            for site in self.sites:
                apply_channel_mask(model, site, torch.ones(site_width(model, site)))
        else:
            self._prune_to(model, 1 if self.steps > 1 else None)
        return model

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        epochs = max(1, total_steps // max(steps_per_epoch, 1))
        span = max(1, epochs // 2)
        # Epochs after which pruning events 2..N happen (event 1 happened in prepare).
        self.events = [round(span * k / (self.steps - 1)) for k in range(1, self.steps)] if self.steps > 1 else []
        self.sfp_hard_epoch = epochs - max(1, round(SFP_FINAL_FRACTION * epochs)) if epochs > 1 else 1

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
            previous = self._ratios_at(event - 1) if event and event > 1 else dict.fromkeys(target, 0.0)
            increment = {k: (target[k] - previous[k]) / (1 - previous[k]) for k in target}
            self.pruner.apply(model, self.sites, increment, self.cost)
        self.done_events = event or self.steps

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        if self.sfp:
            if self.sfp_hard_epoch is None or epoch < self.sfp_hard_epoch:
                self._soft_zero(model)
            elif epoch == self.sfp_hard_epoch:
                self._sfp_mask(model)
        elif self.done_events < self.steps and epoch in self.events:
            self._prune_to(model, self.done_events + 1)
        global_sparsity, _ = sparsity(model)
        return {"weight_sparsity": global_sparsity, "structured_macs_ratio": self._structured_ratio(model)}

    def _soft_zero(self, model: nn.Module) -> None:
        """SFP: zero the lowest-L2 filters of each site. No mask and BN untouched, so gradients still reach the
        zeroed filters through BN's batch statistics and they may regrow (the point of soft pruning)."""
        with torch.no_grad():
            for site in self.sites:
                producer = model.get_submodule(site.producer)
                weight, bias = current(producer, "weight"), current(producer, "bias")
                drop = lowest(L2Norm()(weight), removed(weight.shape[0], self.ratios[site.name]))
                weight[drop] = 0
                if bias is not None:
                    bias[drop] = 0

    def _sfp_mask(self, model: nn.Module) -> None:
        """Make the current lowest-L2 filters of each site a permanent channel mask (BN and passthrough too)."""
        for site in self.sites:
            weight = current(model.get_submodule(site.producer), "weight")
            n = removed(weight.shape[0], self.ratios[site.name])
            apply_channel_mask(model, site, keep_lowest_removed(L2Norm()(weight), n))

    def _sfp_masked(self, model: nn.Module) -> bool:
        return any(channel_mask(model, s).min() < 1 for s in self.sites)

    def _keep_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {s.name: channel_mask(model, s) for s in self.sites}

    def _structured_ratio(self, model: nn.Module) -> float:
        """Structured-effective MACs / dense: what the kept channels cost once removed."""
        if not self.structured:
            return 1.0
        if self.final_fractions is not None:  # after --hard the model is already narrow
            fractions = self.final_fractions
        elif self.sfp:
            fractions = keep_fractions(self.cost, self.ratios)
        else:
            fractions = {k: v.mean().item() for k, v in self._keep_masks(model).items()}
        return self.cost.macs(fractions) / self.dense_macs

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor:
        return torch.full((batch_size,), self._structured_ratio(model) * self.dense_macs, dtype=torch.float64)

    def finalize(self, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None) -> None:
        if self.sfp and not self._sfp_masked(model):  # a run too short to reach the hard epoch
            self._sfp_mask(model)
        if not self.structured:
            self.macs_nonzero = nonzero_macs(model, self.cost)
        if self.hard and self.structured:
            keep = {name: m.nonzero().flatten() for name, m in self._keep_masks(model).items()}
            self.final_fractions = {k: len(v) / self.cost.site_widths[k] for k, v in keep.items()}
            make_permanent(model)
            slice_sites(model, self.sites, keep)
            self.site_keep = {k: v.tolist() for k, v in keep.items()}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"site_keep": self.site_keep} if self.site_keep is not None else {}

    def result_fields(self) -> dict[str, Any]:
        fields = {
            "prune": self.name,
            "structured": self.structured,
            "hard": self.hard and self.structured,
            "ratios": self.ratios,
        }
        if self.macs_nonzero is not None:
            fields["macs_nonzero"] = self.macs_nonzero
            fields["macs_nonzero_ratio"] = self.macs_nonzero / self.dense_macs
        return fields


def nonzero_macs(model: nn.Module, cost: CostModel) -> float:
    """MACs if zero weights were free: each layer's MACs x its density (unstructured methods report this)."""
    names = {id(m): p for p, m in model.named_modules()}
    density = {names[id(m)]: float((getattr(m, n) != 0).float().mean()) for m, n in prunable_weights(model)}
    return float(sum(layer.macs * density.get(layer.name, 1.0) for layer in cost.layers))
