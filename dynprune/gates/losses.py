"""The loss terms a gated run adds to the task loss: the MAC budget with its per-site balance, and the terms that
keep gates input-dependent (the activation guide, ConvNet-AIG's rate term, batch-shaping, the usage floor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cost import CostModel
from ..distributed import global_mean
from .beta import BetaPrior
from .density import bounds
from .estimator import Estimator
from .guide import batch_shaping_loss, gate_rate_loss, guide_loss, usage_floor_loss
from .module import GateSet
from .schedule import GateSchedule

#: every site's open rate is pushed back inside these bounds (no site collapses to all-off or stays all-on)
BALANCE_LOW, BALANCE_HIGH = 0.05, 0.95


class GateLosses:
    def __init__(
        self, schedule: GateSchedule, estimator: Estimator, cost: CostModel, dense_macs: float, gate_set: GateSet
    ) -> None:
        self.schedule, self.options, self.estimator = schedule, schedule.options, estimator
        self.cost, self.dense_macs, self.gate_set = cost, dense_macs, gate_set
        self._shape_prior: BetaPrior | None = None  # batch-shaping's prior, built on first use

    def __call__(self, step: int, epoch: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The sum of the terms in force at ``step`` (None: none is), and the scalars to log."""
        guide = self.guide(step)
        if self.schedule.held_open(step):  # held open at the start: the activation guide is the gates' only signal
            return guide, ({"guide_loss": guide.item()} if guide is not None else {})
        budget, logs = self.budget(step, epoch)
        terms = {
            "guide_loss": guide,
            "rate_loss": self.rate(step),
            "shape_loss": self.shape(step),
            "usage_loss": self.usage(),
        }
        logs.update({name: term.item() for name, term in terms.items() if term is not None})
        present = [t for t in (budget, *terms.values()) if t is not None]
        return (sum(present) if present else None), logs

    def guide(self, step: int) -> torch.Tensor | None:
        if not self.schedule.guided(step):
            return None
        densities = self.schedule.densities if self.options.guide_final_k else self.schedule.densities_at(step)
        return self.options.guide_weight * guide_loss(self.gate_set.logits, self.gate_set.activity, densities)

    def rate(self, step: int) -> torch.Tensor | None:
        if self.options.gate_rate_weight <= 0:
            return None
        return self.options.gate_rate_weight * gate_rate_loss(self.channel_rates(), self.schedule.densities_at(step))

    def channel_rates(self) -> dict[str, torch.Tensor]:
        """Each channel's open rate over the batch, [C] per site: over the global batch under torchrun, as the
        budget term's (a square of the mean, not a mean of squares)."""
        return {site: global_mean(m.float()) for site, m in self.gate_set.cost_masks.items()}

    def usage(self) -> torch.Tensor | None:
        o = self.options
        if o.gate_usage_weight <= 0:
            return None
        masks = self.gate_set.cost_masks
        scores = {  # the mean logit per channel (a group's for each of its channels): orders channels that tie
            site: self.gate_set.logits[site]
            .mean(dim=0)
            .repeat_interleave(m.shape[1] // self.gate_set.logits[site].shape[1])
            for site, m in masks.items()
        }
        return o.gate_usage_weight * usage_floor_loss(
            self.channel_rates(), o.gate_usage_floor, o.gate_usage_share, scores
        )

    def shape(self, step: int) -> torch.Tensor | None:
        """Batch-shaping at a weight decaying linearly to 0 at ``gate_shape_until`` of the run (on this rank's
        batch under torchrun)."""
        o = self.options
        fade = 1.0 - step / (o.gate_shape_until * self.schedule.total_steps)
        if o.gate_shape_weight <= 0 or fade <= 0:
            return None
        sites = [s.name for s in self.gate_set.sites]  # the order the prior's columns follow
        if self._shape_prior is None:  # Beta(d, 1 - d) per gate, d = its site's final density
            final = self.schedule.densities
            d = torch.cat([torch.full((self.gate_set.gate(s).groups,), final[s]) for s in sites])
            d = d.clamp(1e-3, 1 - 1e-3)  # a site kept whole (d = 1) or shut: Beta(1, 0) has no density
            self._shape_prior = BetaPrior(d, 1.0 - d)
        return o.gate_shape_weight * fade * batch_shaping_loss(self.gate_set.logits, self._shape_prior, sites)

    def budget(self, step: int, epoch: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        masks = self.gate_set.cost_masks
        ratio = self.cost.macs_from_masks(masks) / self.dense_macs  # [B], differentiable through the estimator
        target = self.schedule.target_at(step)
        logs = {"macs_ratio": ratio.mean().item(), "budget_target": target, **self.estimator.logs()}
        if self.estimator.fixed_count:  # every sample already costs exactly its sites' densities
            return None, logs
        # Means over the global batch under torchrun: the budget is a square of the mean, not a mean of squares.
        rates = global_mean(torch.stack([m.mean(dim=1) for m in masks.values()], dim=1))  # [S] open rate per site
        if self.options.per_site:  # every site held to its own density
            now = self.schedule.densities_at(step)
            wanted = torch.tensor([now[name] for name in masks], dtype=rates.dtype, device=rates.device)
            budget = ((rates - wanted) ** 2).mean()
        else:
            budget = (global_mean(ratio) - target) ** 2
        low, high = self._bounds(rates, list(masks), epoch)
        balance = (F.relu(low - rates) ** 2 + F.relu(rates - high) ** 2).mean()
        return self.options.budget_weight * budget + self.options.balance_weight * balance, logs

    def _bounds(
        self, rates: torch.Tensor, sites: list[str], epoch: int
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Per-site open-rate bounds: [0.05, 0.95], tightened towards each site's density with DGNet's decay."""
        if self.options.density_bound_decay <= 0:
            return BALANCE_LOW, BALANCE_HIGH
        pairs = [bounds(self.schedule.densities[s], epoch, self.options.density_bound_decay) for s in sites]
        low, high = (torch.tensor(v, dtype=rates.dtype, device=rates.device) for v in zip(*pairs, strict=True))
        return low, high
