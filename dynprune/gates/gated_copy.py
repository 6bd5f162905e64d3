"""The first step of every executor of a gated model (deploy, fixed-k): an inference copy with its gates folded
and its hooks removed, whose layers the executor then swaps for its own."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ..fold import conv_bn_pairs, fast_pooling, folded_conv
from ..sites import ChannelSite, set_module, site_width
from .module import GateSet
from .site_runtime import DeployGate


def _roles(sites: Sequence[ChannelSite]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    produces, consumes, inside = {}, {}, {}
    for s in sites:
        produces[s.producer] = s.name
        for c in s.consumers:
            consumes[c] = s.name
        for p in s.passthrough:
            inside[p] = s.name
    return produces, consumes, inside


@dataclass
class GatedCopy:
    """An inference copy of a gated model, prepared for its layers to be swapped: gate hooks removed, fast
    pooling, the gates folded (``DeployGate``), each site's width; ``model.gate_set`` is gone."""

    model: nn.Module
    sites: Sequence[ChannelSite]
    widths: dict[str, int]
    gates: dict[str, DeployGate]


def gated_copy(model: nn.Module) -> GatedCopy:
    """The first step of every executor of a gated model; the original model stays as is."""
    gate_set: GateSet = getattr(model, "gate_set", None)
    if gate_set is None:
        raise ValueError("deploy needs a gated model (attach gates first); use fold_bn for dense models")
    gate_set.detach_batch_state()
    model = fast_pooling(copy.deepcopy(model).eval())
    gate_set = model.gate_set
    gate_set.remove()  # no more masking hooks: the deploy layers skip the work instead
    sites = gate_set.sites
    widths = {s.name: site_width(model, s) for s in sites}
    gates = {
        s.name: DeployGate(gate_set.gate(s.name), gate_set.fixed_keep(s.name), gate_set.tiers(s.name)) for s in sites
    }
    del model.gate_set  # its gates now live, folded, inside the executor's layers
    return GatedCopy(model, sites, widths, gates)


#: make_conv(folded conv, input site, output site, depthwise inside its input site, input width) -> layer
ConvFactory = Callable[[nn.Conv2d, str | None, str | None, bool, int], nn.Module]
#: make_linear(linear, input site) -> layer
LinearFactory = Callable[[nn.Linear, str], nn.Module]


def swap_layers(copied: GatedCopy, make_conv: ConvFactory, make_linear: LinearFactory) -> nn.Module:
    """Fold every conv's BN in and swap each layer that touches a site for the executor's own; returns the
    model (changed in place)."""
    model = copied.model
    produces, consumes, inside = _roles(copied.sites)
    pairs = conv_bn_pairs(model)
    for path, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        in_site = consumes.get(path) or inside.get(path)
        out_site = produces.get(path)
        if isinstance(module, nn.Linear):
            if in_site is not None:
                set_module(model, path, make_linear(module, in_site))
            continue
        conv = folded_conv(model, path, pairs.get(path))
        if path in pairs:
            set_module(model, pairs[path], nn.Identity())
        if in_site is None and out_site is None:
            set_module(model, path, conv)
            continue
        set_module(model, path, make_conv(conv, in_site, out_site, path in inside, module.in_channels))
    return model
