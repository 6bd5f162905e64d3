"""Importance criteria for a site's channels: tiny classes with one ``__call__(group) -> [C] scores``.

A criterion sees the coupled group, as Torch-Pruning's ``Importance.__call__(group)`` does: the producer's
weight (filters as rows), the BN right after it, and the consumers' input weights, so weight norms, network
slimming's BN scale or a consumer-side score are each one small class. Higher score = more important = kept
longer. A criterion class registered with ``@CRITERIA.add`` (its ``name`` and ``description``) becomes the
per-site structured pruner ``--prune NAME`` (``prune/pruners.py`` builds one for each); gate initialisation, the
RL search's scorer, sfp and global-filter take a criterion too. Adding a criterion is adding its class here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import Registry
from ..sites import ChannelSite, get_module
from .masks import current


@dataclass(frozen=True)
class ChannelGroup:
    """One site's channels as the layers that hold them: the weights as trained, pruning masks not applied (a
    pruned channel is scored by what it holds, as every criterion here always has)."""

    weight: torch.Tensor  # the producer's weight, [C, ...]: one row per channel
    bn_scale: torch.Tensor | None  # [C]: the scale of the BN right after the producer, if it has one
    consumers: tuple[torch.Tensor, ...]  # each consumer's weight (conv: channels along dim 1; linear: flattened)
    bn_shift: torch.Tensor | None = None  # [C]: that BN's shift (beta), if it has one

    @classmethod
    def of(cls, model: nn.Module, site: ChannelSite) -> ChannelGroup:
        weight = current(get_module(model, site.producer), "weight")
        bn = get_module(model, site.bn) if site.bn else None
        affine = bn is not None and getattr(bn, "weight", None) is not None
        scale, shift = (current(bn, "weight"), current(bn, "bias")) if affine else (None, None)
        consumers = tuple(current(get_module(model, path), "weight") for path in site.consumers)
        return cls(weight, scale, consumers, shift)


Criterion = Callable[[ChannelGroup], torch.Tensor]
#: name -> criterion class (its ``name`` and ``description`` class attributes)
CRITERIA: Registry[type] = Registry("filter criterion")


@CRITERIA.add
class L1Norm:
    name = "l1-filter"
    description = "per site, drop the filters of smallest L1 norm"

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        return group.weight.detach().flatten(1).abs().sum(dim=1)


@CRITERIA.add
class L2Norm:
    name = "l2-filter"
    description = "per site, drop the filters of smallest L2 norm"

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        return group.weight.detach().flatten(1).norm(dim=1)


@CRITERIA.add
class GeometricMedianDistance:
    """FPGM: a filter close to the others' geometric median is replaceable by them, whatever its norm. The
    summed distance to every other filter of the layer scores it (the minimiser of that sum is the median)."""

    name = "fpgm-filter"
    description = "per site, drop the filters nearest the geometric median (FPGM, He et al. 2019)"

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        flat = group.weight.detach().flatten(1).double()
        return torch.cdist(flat, flat).sum(dim=1).to(group.weight.dtype)


@CRITERIA.add
class RandomScore:
    name = "random-filter"
    description = "per site, drop random filters"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        return torch.rand(group.weight.shape[0], generator=self.generator).to(group.weight.device)


@CRITERIA.add
class BatchNormScale:
    """Network slimming's criterion: the BN scale after the producer says how much a channel passes on (without
    a BN, the producer's L1 norm)."""

    name = "slim-filter"
    description = "per site, drop the channels of smallest BN scale |gamma| (network slimming, Liu 2017)"

    def __call__(self, group: ChannelGroup) -> torch.Tensor:
        if group.bn_scale is None:
            return L1Norm()(group)
        return group.bn_scale.detach().abs().clone()


def make_criterion(name: str) -> Criterion:
    """A registered criterion by its name (``l1-filter``, ``slim-filter``, ...)."""
    return CRITERIA[name]()


def lowest(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` lowest scores (ties broken by index, so results are reproducible)."""
    order = torch.sort(scores, stable=True).indices
    return order[:n]


def keep_lowest_removed(scores: torch.Tensor, n_remove: int) -> torch.Tensor:
    """A 0/1 keep mask with the ``n_remove`` lowest scores at 0."""
    keep = torch.ones_like(scores)
    keep[lowest(scores, n_remove)] = 0
    return keep
