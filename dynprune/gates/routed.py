"""Network-scope width gates deployed as a router over static sub-networks (DS-Net's dynamic mode).

With ``--gate width --width-scope network`` the first site's gate picks one width per input for every site, so
each input runs one of ``len(--width-choices)`` fixed models: the model without its gates, every site sliced to
that width's prefix of its channels, BN folded. ``RoutedWidths`` runs the gated model only as far as the router's
decision (the stem and one small gate; the pass stops there), then each width's inputs, grouped, in one batched
call of that width's narrow model (batch 1: one call). The narrow models are plain static models: compiled
PyTorch and ONNX Runtime pre-pack each one (``prepare``), which no per-sample channel set allows. The stem runs
twice (router and branch): a few tenths of a percent of ResNet-20's MACs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..fold import fold_bn
from ..sites import slice_sites

#: (module, example input, threads) -> a callable running it (``runtimes.RUNTIMES``' shape)
MakeExecutor = Callable[[nn.Module, torch.Tensor, int], Callable[[torch.Tensor], torch.Tensor]]


class RoutedUnsupported(ValueError):
    """The gated model has no network-wide router (its gates decide per site)."""


class _Routed(Exception):
    """Ends the router's pass at the first site, carrying each input's width index."""

    def __init__(self, widths: torch.Tensor) -> None:
        super().__init__()
        self.widths = widths


def width_index(logits: torch.Tensor) -> torch.Tensor:
    """[B, tiers - 1] router logits -> [B] index of the chosen width (the eval decision: tiers up to the first
    negative logit)."""
    return ((logits < 0).cumsum(dim=1) == 0).sum(dim=1)


def narrow_model(model: nn.Module, width: int) -> nn.Module:
    """The gated model without its gates, every site cut to the channels of width choice ``width`` (a prefix),
    BN folded: a plain static model that computes what the gated model computes for inputs routed there."""
    gate_set = model.gate_set
    gate_set.detach_batch_state()  # a deep copy cannot copy a training step's graph
    keep = {}
    for site in gate_set.sites:
        gate = gate_set.gate(site.name)
        kept_groups = int((gate_set.tiers(site.name) <= width).sum())
        keep[site.name] = torch.arange(kept_groups * (gate.channels // gate.groups))
    plain = copy.deepcopy(model)
    plain.gate_set.remove()
    del plain.gate_set
    slice_sites(plain, gate_set.sites, keep)
    return fold_bn(plain.eval())


class RoutedWidths(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        gate_set = model.gate_set
        if gate_set.router is None:
            raise RoutedUnsupported(
                "the routed executor needs one width per input for the network: --width-scope network"
            )
        gate_set.detach_batch_state()
        self.router = copy.deepcopy(model).eval()
        for module in self.router.modules():  # the copied hooks still act on the original's gate set
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        router_site = gate_set.router
        gate = self.router.gate_set.gate(router_site)
        shift = gate_set.logit_shift + gate_set.site_shifts.get(router_site, 0.0)

        def stop(module: nn.Module, args: tuple) -> None:  # the router's decision, then no more of the pass
            raise _Routed(width_index(gate(args[0]) + shift))

        self.router.get_submodule(gate_set.sites[0].producer).register_forward_pre_hook(stop)
        choices = len(gate_set.estimator.options.width_choices)
        self.branches = nn.ModuleList(narrow_model(model, w) for w in range(choices))
        self.prepared: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor]] = {}

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """[B] width index of each input."""
        try:
            self.router(x)
        except _Routed as routed:
            return routed.widths
        raise RuntimeError("the router's pass never reached its first channel site")

    def prepare(self, make: MakeExecutor, example: torch.Tensor, threads: int) -> None:
        """Build each branch in runtime ``make`` for the group sizes ``example`` routes to (compiled and ONNX
        Runtime executors are built for one input shape); other group sizes run the branch as it is."""
        self.prepared = {}
        widths = self.route(example)
        for w in widths.unique().tolist():
            group = example[widths == w]
            self.prepared[(w, group.shape[0])] = make(self.branches[w], group, threads)

    def branch(self, width: int, x: torch.Tensor) -> torch.Tensor:
        run = self.prepared.get((width, x.shape[0]), self.branches[width])
        return run(x)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        widths = self.route(x)
        chosen = widths.unique().tolist()
        if len(chosen) == 1:
            return self.branch(chosen[0], x)
        out: torch.Tensor | None = None
        for w in chosen:
            index = (widths == w).nonzero().flatten()
            y = self.branch(w, x.index_select(0, index))
            if out is None:
                out = y.new_empty(x.shape[0], *y.shape[1:])
            out[index] = y
        return out
