"""Importance criteria for filters (output channels of a site's producer): tiny classes with one ``__call__``.

Higher score = more important = kept longer. A criterion registered with ``@criterion(name, description)``
becomes the per-site structured pruner ``--prune NAME`` (``prune/pruners.py`` builds one for each): adding a
criterion is adding its class here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import Registry

Criterion = Callable[[torch.Tensor], torch.Tensor]
#: name -> (criterion class, description)
CRITERIA: Registry[tuple[type, str]] = Registry("filter criterion")


def criterion(name: str, description: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        CRITERIA.add(name, (cls, description))
        return cls

    return wrap


@criterion("l1-filter", "per site, drop the filters of smallest L1 norm")
class L1Norm:
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().flatten(1).abs().sum(dim=1)


@criterion("l2-filter", "per site, drop the filters of smallest L2 norm")
class L2Norm:
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().flatten(1).norm(dim=1)


@criterion("fpgm-filter", "per site, drop the filters nearest the geometric median (FPGM, He et al. 2019)")
class GeometricMedianDistance:
    """FPGM: a filter close to the others' geometric median is replaceable by them, whatever its norm. The
    summed distance to every other filter of the layer scores it (the minimiser of that sum is the median)."""

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().flatten(1).double()
        return torch.cdist(flat, flat).sum(dim=1).to(weight.dtype)


@criterion("random-filter", "per site, drop random filters")
class RandomScore:
    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.rand(weight.shape[0], generator=self.generator).to(weight.device)


def lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` lowest scores (ties broken by index, so results are reproducible)."""
    order = torch.sort(scores, stable=True).indices
    return order[:n]


def keep_lowest_removed(scores: torch.Tensor, n_remove: int) -> torch.Tensor:
    """A 0/1 keep mask with the ``n_remove`` lowest scores at 0."""
    keep = torch.ones_like(scores)
    keep[lowest(scores, n_remove)] = 0
    return keep
