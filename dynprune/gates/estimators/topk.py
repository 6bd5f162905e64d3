"""k-winner-take-all (FBS, Gao et al. 2019): every sample keeps exactly its site's k highest-scoring channels.

k = round(density x groups) per site, so every sample costs the same and the shapes are fixed (what a static
deploy runtime needs); the budget is met by construction and needs no loss term. The forward is the hard top-k
mask in training and at eval alike; the backward is straight-through to sigmoid(logit / tau), so the channels'
scores are trained by the task loss alone.
"""

from __future__ import annotations

import dataclasses

import torch

from ...base import ConfigError, option
from ..density import kept_groups
from ..estimator import DYNAMIC_START, STATIC_VARIANT, Estimator, straight_through


@dataclasses.dataclass
class TopkOptions:
    topk_tau: float = option(1.0, "topk: temperature of the sigmoid whose gradient the top-k mask passes on")

    def validate(self) -> None:
        if self.topk_tau <= 0:
            raise ConfigError(f"--topk-tau must be > 0, got {self.topk_tau}")


class Topk(Estimator):
    name = "topk"
    Options = TopkOptions
    summary = "the site's k highest logits per sample (train and eval), straight-through to sigmoid(logit/tau)"
    recipe = DYNAMIC_START
    variants = STATIC_VARIANT
    fixed_count = True

    def fixed_keep(self, groups: int, density: float) -> int:
        return kept_groups(groups, density)

    def decide(self, logits: torch.Tensor, training: bool, density: float) -> torch.Tensor:
        k = self.fixed_keep(logits.shape[1], density)
        hard = torch.zeros_like(logits).scatter_(1, logits.topk(k, dim=1).indices, 1.0)
        if not training:
            return hard
        return straight_through(hard, torch.sigmoid(logits / self.options.topk_tau))


ESTIMATOR = Topk
