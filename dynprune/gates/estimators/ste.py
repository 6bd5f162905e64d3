"""Straight-through threshold: the forward is the eval decision (logit >= 0), the backward a surrogate."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from ...base import option
from ..estimator import HELD_PER_SITE, STATIC_VARIANT, Estimator, eval_decision, straight_through


@dataclasses.dataclass
class SteOptions:
    ste_grad: Literal["sigmoid", "identity"] = option("sigmoid", "ste: backward of the threshold")


class Ste(Estimator):
    name = "ste"
    Options = SteOptions
    summary = "logit >= 0 forward (train and eval), sigmoid or identity gradient"
    recipe = HELD_PER_SITE
    variants = STATIC_VARIANT

    def decide(self, logits: torch.Tensor, training: bool, density: float) -> torch.Tensor:
        hard = eval_decision(logits)
        if not training:
            return hard
        soft = torch.sigmoid(logits) if self.options.ste_grad == "sigmoid" else logits
        return straight_through(hard, soft)


ESTIMATOR = Ste
