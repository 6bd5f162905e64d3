"""Network-scope width gates deployed as a router over static sub-networks (DS-Net's dynamic mode).

With ``--gate width --width-scope network`` the first site's gate picks one width per input for every site, so
each input runs one of ``len(--width-choices)`` fixed models: the model without its gates, every site sliced to
that width's prefix of its channels, BN folded. ``RoutedWidths`` first runs the ``Router`` (the model's layers
up to the router site's producer, cut out with torch.fx, and the router's gate: the stem and one small gate),
then each width's inputs, grouped, in one batched call of that width's narrow model (batch 1: one call). Router
and branches are plain static models: compiled PyTorch and ONNX Runtime pre-pack each one (``prepare``), which
no per-sample channel set allows. The stem runs twice (router and branch): a few tenths of a percent of
ResNet-20's MACs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..fold import fold_bn
from ..runtimes import OrtExecutor, export_onnx
from ..sites import slice_sites
from .switchable_bn import settle

#: (module, example input, threads) -> a callable running it (``runtimes.RUNTIMES``' shape)
MakeExecutor = Callable[[nn.Module, torch.Tensor, int], Callable[[torch.Tensor], torch.Tensor]]


ROUTER = -1  # the router's key among the prepared executors (branches are keyed by their width index)


class RoutedUnsupported(ValueError):
    """The gated model has no network-wide router (its gates decide per site)."""


def width_index(logits: torch.Tensor) -> torch.Tensor:
    """[B, tiers - 1] router logits -> [B] index of the chosen width (the eval decision: tiers up to the first
    negative logit)."""
    return ((logits < 0).cumsum(dim=1) == 0).sum(dim=1)


def narrow_model(model: nn.Module, width: int) -> nn.Module:
    """The gated model without its gates, every site cut to the channels of width choice ``width`` (a prefix),
    BN folded: a plain static model that computes what the gated model computes for inputs routed there."""
    return fold_bn(narrow_unfolded(model, width))


def narrow_unfolded(model: nn.Module, width: int) -> nn.Module:
    """``narrow_model`` with its BN layers kept (their statistics can still be recomputed), in eval mode."""
    gate_set = model.gate_set
    keep = {}
    for site in gate_set.sites:
        gate = gate_set.gate(site.name)
        kept_groups = int((gate_set.tiers(site.name) <= width).sum())
        keep[site.name] = torch.arange(kept_groups * (gate.channels // gate.groups))
    plain = without_gates(model, width)
    slice_sites(plain, gate_set.sites, keep)
    return plain


class Router(nn.Module):
    """Input -> [B] width index: the model's layers up to the router site's producer (a ``torch.fx`` cut of the
    model without gates, BN folded), then the router's gate and the eval decision. A plain module: compiled
    PyTorch and ONNX Runtime run it as they run the branches."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        gate_set = model.gate_set
        plain = without_gates(model)
        producer = gate_set.sites[0].producer
        try:
            prefix = torch.fx.symbolic_trace(plain)
        except Exception as exc:  # any tracing failure (a data-dependent forward): this model has no router
            raise RoutedUnsupported(
                f"the router is cut from the model by torch.fx, which cannot trace it: {exc}"
            ) from None
        node = next((n for n in prefix.graph.nodes if n.op == "call_module" and n.target == producer), None)
        if node is None:
            raise RoutedUnsupported(f"the router's producer {producer} is not a module call in the traced graph")
        feed = node.args[0]
        output = next(n for n in prefix.graph.nodes if n.op == "output")
        output.args = (feed,)  # the pass ends where the router's producer would start
        prefix.graph.eliminate_dead_code()
        prefix.recompile()
        self.prefix = fold_bn(prefix)
        self.gate = copy.deepcopy(gate_set.gate(gate_set.router)).eval()
        self.shift = gate_set.logit_shift + gate_set.site_shifts.get(gate_set.router, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return width_index(self.gate(self.prefix(x)) + self.shift)


def without_gates(model: nn.Module, width: int = -1) -> nn.Module:
    """A copy of a gated model with its gates removed (the dense model), in eval mode; switchable BatchNorms
    (``--width-switchable-bn``) keep their copy for width choice ``width`` (default: the widest)."""
    model.gate_set.detach_batch_state()  # a deep copy cannot copy a training step's graph
    plain = copy.deepcopy(model)
    plain.gate_set.remove()
    del plain.gate_set
    return settle(plain, width).eval()


def run_grouped(
    x: torch.Tensor, widths: torch.Tensor, branch: Callable[[int, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Each width's inputs in one call of ``branch(width, group)``, the outputs back in the inputs' order (one
    width for the whole batch: one call, no copies)."""
    chosen = widths.unique().tolist()
    if len(chosen) == 1:
        return branch(chosen[0], x)
    out: torch.Tensor | None = None
    for w in chosen:
        index = (widths == w).nonzero().flatten()
        y = branch(w, x.index_select(0, index))
        if out is None:
            out = y.new_empty(x.shape[0], *y.shape[1:])
        out[index] = y
    return out


class RoutedWidths(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        gate_set = model.gate_set
        if gate_set.router is None:
            raise RoutedUnsupported(
                "the routed executor needs one width per input for the network: --width-scope network"
            )
        self.router = Router(model)
        choices = len(gate_set.estimator.options.width_choices)
        self.branches = nn.ModuleList(narrow_model(model, w) for w in range(choices))
        #: (width, batch) -> that branch built in a runtime; (ROUTER, batch) -> the router (a plain dict: a
        #: runtime's executor need not be a module)
        self.prepared: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor]] = {}

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """[B] width index of each input."""
        return self.prepared.get((ROUTER, x.shape[0]), self.router)(x).to(x.device)

    def prepare(self, make: MakeExecutor, example: torch.Tensor, threads: int, one_by_one: bool = False) -> None:
        """Build each branch in runtime ``make`` for the group sizes ``example`` routes to (compiled and ONNX
        Runtime executors are built for one input shape), or (``one_by_one``) for its images one at a time;
        other group sizes run the branch as it is."""
        self.prepared = {}
        widths = self.route(example)
        routed_at = example[:1] if one_by_one else example
        self.prepared[(ROUTER, routed_at.shape[0])] = make(self.router, routed_at, threads)
        for w in widths.unique().tolist():
            group = example[widths == w][:1] if one_by_one else example[widths == w]
            self.prepared[(w, group.shape[0])] = make(self.branches[w], group, threads)

    def branch(self, width: int, x: torch.Tensor) -> torch.Tensor:
        run = self.prepared.get((width, x.shape[0]), self.branches[width])
        return run(x).to(x.device)  # ONNX Runtime answers on the CPU

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_grouped(x, self.route(x), self.branch)


def export_routed(routed: RoutedWidths, example: torch.Tensor, path: Path) -> list[Path]:
    """The router as ``path`` and each width's branch beside it (``<stem>.width<i>.onnx``), every file for any
    batch size (a group of one width is any part of a batch); returns the files written, the router first."""
    files = [export_onnx(routed.router, example, path, dynamic_batch=True)]
    for w, branch in enumerate(routed.branches):
        files.append(export_onnx(branch, example, path.with_name(f"{path.stem}.width{w}.onnx"), dynamic_batch=True))
    return files


class OrtRouted:
    """The exported router and branches run by ONNX Runtime as ``RoutedWidths`` runs them in PyTorch."""

    def __init__(self, files: list[Path], threads: int) -> None:
        self.router, *branches = (OrtExecutor(f, threads) for f in files)
        self.branches = branches

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return run_grouped(x, self.router(x).to(x.device), lambda w, group: self.branches[w](group).to(x.device))
