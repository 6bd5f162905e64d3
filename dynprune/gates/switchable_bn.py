"""Switchable BatchNorm for width gates at network scope (slimmable networks, Yu et al. 2019): one BatchNorm per
width choice, each input normalised by the one of the width the router chose for it.

A channel's statistics depend on the width its inputs were computed at (a narrow convolution sums fewer input
channels), so one BN shared by every width normalises each width with the mixed statistics of all of them; built
after the fact, per-width statistics did not help a model trained with shared ones (BENCHMARKS, "Width gates at
network scope"): they are trained with the model here. Every BN that runs after the router decides is switched
(``switch_norms``), each copy starting as the dense model's; the ones before it (the stem) see the same input at
every width and stay shared. Deploy keeps one copy per narrow model (``settle``), so the routed executor's
branches are plain models with BN folded as before.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..base import ConfigError


@dataclasses.dataclass
class Route:
    """The width index [B] the router chose in the current forward pass (None before it decides)."""

    index: torch.Tensor | None = None


class SwitchableBatchNorm2d(nn.Module):
    def __init__(self, norm: nn.BatchNorm2d, choices: int, route: Route) -> None:
        super().__init__()
        self.norms = nn.ModuleList(copy.deepcopy(norm) for _ in range(choices))
        self.route = route  # a plain object shared with the width estimator, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = self.route.index
        if index is None or index.shape[0] != x.shape[0]:
            raise RuntimeError("a switchable BatchNorm ran before the network's router chose a width for its batch")
        chosen = index.unique().tolist()
        if len(chosen) == 1:
            return self.norms[chosen[0]](x)
        out = torch.empty_like(x)
        for w in chosen:
            rows = index == w
            out[rows] = self.norms[w](x[rows])  # in training each width's statistics come from its own inputs
        return out


def switch_norms(model: nn.Module, router_producer: str, choices: int, route: Route) -> list[str]:
    """Replace every BatchNorm2d that runs after ``router_producer`` (in the traced forward order) by a switchable
    one of ``choices`` copies; returns their paths."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # any tracing failure (a data-dependent forward)
        raise ConfigError(
            f"--width-switchable-bn finds the layers after the router with torch.fx, which cannot "
            f"trace this model: {exc}"
        ) from None
    called = [n.target for n in graph.nodes if n.op == "call_module"]
    if router_producer not in called:
        raise ConfigError(f"--width-switchable-bn: the router's producer {router_producer} is not a module call")
    after = called[called.index(router_producer) + 1 :]
    switched = [p for p in after if type(model.get_submodule(p)) is nn.BatchNorm2d]
    for path in switched:
        model.set_submodule(path, SwitchableBatchNorm2d(model.get_submodule(path), choices, route))
    return switched


def settle(model: nn.Module, width: int) -> nn.Module:
    """``model`` with every switchable BatchNorm replaced by its copy for width choice ``width`` (in place)."""
    for path, module in list(model.named_modules()):
        if isinstance(module, SwitchableBatchNorm2d):
            model.set_submodule(path, module.norms[width])
    return model


def switched_norms(model: nn.Module) -> set[nn.Module]:
    """The per-width BatchNorms inside ``model``'s switchable ones."""
    return {n for m in model.modules() if isinstance(m, SwitchableBatchNorm2d) for n in m.norms}
