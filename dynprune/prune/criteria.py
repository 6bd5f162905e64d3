"""Importance criteria for filters (output channels of a site's producer): tiny classes with one ``__call__``.

Higher score = more important = kept longer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class L1Norm:
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().flatten(1).abs().sum(dim=1)


class L2Norm:
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().flatten(1).norm(dim=1)


class RandomScore:
    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.rand(weight.shape[0], generator=self.generator).to(weight.device)


Criterion = Callable[[torch.Tensor], torch.Tensor]


def lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` lowest scores (ties broken by index, so results are reproducible)."""
    order = torch.sort(scores, stable=True).indices
    return order[:n]
