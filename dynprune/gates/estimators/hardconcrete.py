"""Hard-concrete gates (L0 regularisation, Louizos, Welling & Kingma 2018), with an input-conditioned log-alpha.

Training: u ~ U(0, 1), s = sigmoid((log u - log(1 - u) + log_alpha) / beta), stretched to (gamma, zeta) and
clamped to [0, 1] (the reference code's gamma = -0.1, zeta = 1.1, beta = 2/3). The reference gates are one
log-alpha per feature map; here log-alpha is the gate network's logit, so it depends on the input.

``--hc-hard`` (default): the forward is the hard decision z >= 0.5, straight-through to z, and the budget counts
its closed-form probability P(z >= 0.5) = sigmoid(log_alpha) (an expected cost: no sampling noise in the budget
term). ``--no-hc-hard``: the forward is z itself, as in the paper, and the budget counts the expected L0 norm
P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)). Eval: open iff log_alpha >= 0, i.e. the paper's
test-time gate clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1) >= 0.5.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ...base import ConfigError, option
from ..estimator import HELD_PER_SITE, STATIC_VARIANT, Estimator, eval_decision, logistic_noise, straight_through

GAMMA, ZETA = -0.1, 1.1


@dataclasses.dataclass
class HardConcreteOptions:
    hc_beta: float = option(2 / 3, "hardconcrete: temperature beta of the concrete distribution")
    hc_hard: bool = option(True, "hardconcrete: hard 0/1 forward (budget on P(open)); off: z itself (expected L0)")

    def validate(self) -> None:
        if self.hc_beta <= 0:
            raise ConfigError(f"--hc-beta must be > 0, got {self.hc_beta}")


class HardConcrete(Estimator):
    name = "hardconcrete"
    Options = HardConcreteOptions
    summary = "stretched hard-concrete sample (L0), hard 0/1 forward straight-through to it; eval: logit >= 0"
    recipe = HELD_PER_SITE
    variants = STATIC_VARIANT

    def decide(self, logits: torch.Tensor, training: bool, density: float) -> torch.Tensor:
        if not training:
            return eval_decision(logits)
        s = torch.sigmoid((logits + logistic_noise(logits.shape, logits)) / self.options.hc_beta)
        z = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        return straight_through((z >= 0.5).to(z.dtype), z) if self.options.hc_hard else z

    def cost_mask(self, logits: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        if self.options.hc_hard:
            return torch.sigmoid(logits)  # P(z >= 0.5)
        return torch.sigmoid(logits - self.options.hc_beta * math.log(-GAMMA / ZETA))  # P(z != 0)


ESTIMATOR = HardConcrete
