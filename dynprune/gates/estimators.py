"""Gate estimators: how a real-valued logit becomes a 0/1 channel decision that gradients can pass through.

Every estimator is deterministic in eval mode: open iff ``logit >= 0`` (probability >= 0.5), no noise; leaving
the noise on at test time is a known bug of ConvNet-AIG that we avoid by construction.
Straight-through outputs are written ``hard + (soft - soft.detach())``: the added term is exactly zero in the
forward pass, so forward values are exactly 0 or 1 while the gradient is that of ``soft``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import Registry

# (logits, training, tau, noise scale) -> decisions; the noise scale fades gumbel's noise out at the end of a run
Estimator = Callable[[torch.Tensor, bool, float, float], torch.Tensor]
ESTIMATORS: Registry[Callable[..., Estimator]] = Registry("gate estimator")


def register_estimator(name: str) -> Callable[[Callable[..., Estimator]], Callable[..., Estimator]]:
    return ESTIMATORS.register(name)


def create_estimator(name: str, **kwargs: object) -> Estimator:
    return ESTIMATORS.get(name)(**kwargs)


def logistic_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Difference of two Gumbels = logistic noise log(u) - log(1 - u), clamped away from u in {0, 1}."""
    u = torch.rand(shape, device=like.device, dtype=like.dtype).clamp_(1e-6, 1 - 1e-6)
    return torch.log(u) - torch.log1p(-u)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return hard + (soft - soft.detach())


def eval_decision(logits: torch.Tensor) -> torch.Tensor:
    return (logits >= 0).to(logits.dtype)


@register_estimator("gumbel")
def gumbel(hard: bool = True, **_: object) -> Estimator:
    """Binary Gumbel-softmax (Gumbel-sigmoid / relaxed Bernoulli) with temperature tau.

    ``noise`` scales the logistic noise: at 0 the hard forward is exactly the eval decision (logit >= 0), so a
    run whose noise fades to 0 ends training on the decisions it is tested with.
    """

    def estimate(logits: torch.Tensor, training: bool, tau: float, noise: float = 1.0) -> torch.Tensor:
        if not training:
            return eval_decision(logits)
        if noise > 0:
            logits = logits + noise * logistic_noise(logits.shape, logits)
        soft = torch.sigmoid(logits / tau)
        return straight_through((soft >= 0.5).to(soft.dtype), soft) if hard else soft

    return estimate


@register_estimator("ste")
def ste(ste_grad: str = "sigmoid", **_: object) -> Estimator:
    """Deterministic threshold forward; backward is the identity or the sigmoid's derivative."""
    if ste_grad not in ("identity", "sigmoid"):
        raise ValueError(f"ste gradient {ste_grad!r}; allowed: identity, sigmoid")

    def estimate(logits: torch.Tensor, training: bool, tau: float, noise: float = 1.0) -> torch.Tensor:
        hard = eval_decision(logits)
        if not training:
            return hard
        soft = torch.sigmoid(logits) if ste_grad == "sigmoid" else logits
        return straight_through(hard, soft)

    return estimate
