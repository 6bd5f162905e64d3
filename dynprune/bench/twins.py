"""The static models a gated model is timed against: itself without gates (dense) and its hard-pruned twin."""

from __future__ import annotations

import torch
from torch import nn

from ..fold import fold_bn
from ..gates.method import GatedMethod
from ..gates.routed import without_gates
from ..sites import slice_sites


def hard_pruned_twin(model: nn.Module, method: GatedMethod, inputs: torch.Tensor) -> tuple[nn.Module, float]:
    """The dense model hard-pruned to the gates' channel counts (which channels does not matter for time) and
    its MAC ratio: fixed-k gates' k, other gates' mean open groups per site over ``inputs`` (the
    static model of the same mean cost)."""
    gate_set = model.gate_set
    counts = {s.name: gate_set.fixed_keep(s.name) for s in gate_set.sites}
    if any(k is None for k in counts.values()):
        with torch.no_grad():
            model.eval()(inputs)
        for site in gate_set.sites:
            gate = gate_set.gate(site.name)
            mean_open = gate_set.masks[site.name].sum(dim=1).mean().item() / (gate.channels // gate.groups)
            counts[site.name] = max(1, round(mean_open))
    twin = without_gates(model)
    keep, fractions = {}, {}
    for site in gate_set.sites:
        gate = gate_set.gate(site.name)
        keep[site.name] = torch.arange(counts[site.name] * (gate.channels // gate.groups))  # groups -> channels
        fractions[site.name] = len(keep[site.name]) / method.cost.site_widths[site.name]
    slice_sites(twin, gate_set.sites, keep)
    return fold_bn(twin), float(method.cost.macs(fractions) / method.dense_macs)
