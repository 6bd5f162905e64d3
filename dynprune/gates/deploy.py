"""Deploy mode: a gated model converted into an inference module that really skips the closed channels.

Every published dynamic-gating codebase computes the dense convolution and multiplies by a 0/1 mask, so its
MAC savings never become time. Here, BN is folded into the convolutions, and per call:

1. the site's gate reads the producer's input (global average pool -> MLP -> logit >= 0),
2. the producer computes only the active filters (``weight[idx]``),
3. channel-wise layers in between (MobileNetV2's depthwise conv) compute only those channels,
4. the consumer reads only the matching input channels (``weight[:, idx]``).

The zoo model's own ``forward`` runs unchanged: only its layers are swapped for ``DeployConv`` /
``DeployLinear``, which narrow and widen tensors through a shared per-site ``SiteRuntime``.

Strategies for a batch (``DeployModel.strategy``):
- ``gather``: each sample on its own, exact per-sample channel sets (the batch-1 path; loops over a batch).
- ``union``: one pass over the union of the batch's active channels, per-sample zeros re-applied by a mask.
- ``grouped``: samples of the batch that share a channel set (>= ``MIN_GROUP_SIZE`` of them, the
  ``MAX_GROUPS`` largest sets) get one exact narrow pass each, the rest one ``union`` pass; the site's tensor is
  packed (each group's channels in the first slots). Only where no gated producer reads another site
  (ResNets, MobileNetV2). Trained gates repeat their sets, random ones rarely do.
- ``masked``: dense folded convolutions times the mask (the fallback when gathering would not pay).
- ``auto`` (default): batch 1 -> ``gather`` (or an added executor that asks for it: ``fixedk``); larger
  batches -> ``union``; a model with an exclusive executor (``routed``, for network-scope width gates) runs it
  at every batch size, and the built-in strategies are not offered;
  ``autotune()`` replaces this rule by the fastest strategy measured per batch size on this machine, ``grouped``,
  ``masked`` and added executors included.
- added executors (``add_executor``): whole-model executors of the same gated model run as a strategy of their
  own; ``fixedk`` (``fixed_k.py``, static shapes for fixed-count gates) is added by the gated method where the
  model supports it: the fastest eager executor at batch 1 in every ResNet-20/56 row of BENCHMARKS.md.
Gather: ``index_select`` on the folded weight per call (output filters: a contiguous row copy; input channels:
a strided copy): the fastest of the gathers measured (BENCHMARKS.md, "Deploy mode: how the gathers were chosen").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..timing import interleaved_timing
from .gated_copy import gated_copy, swap_layers
from .routed import RoutedWidths
from .site_runtime import DeployGate, SiteRuntime

STRATEGIES = ("auto", "gather", "union", "grouped", "masked")


class DeployConv(nn.Module):
    """A folded conv that may produce a gated site (``out_gate``), read one (``in_rt``), or be channel-wise
    inside one (``depthwise``)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        in_rt: SiteRuntime | None,
        out_rt: SiteRuntime | None,
        out_gate: DeployGate | None,
        depthwise: bool,
        in_width: int,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        self.in_rt, self.out_rt, self.out_gate = in_rt, out_rt, out_gate
        self.depthwise = depthwise
        self.in_width = in_width
        # nested-width sites: the active channels are a prefix, so the weights of a width are computed once
        runtimes = [rt for rt in (in_rt, out_rt if out_gate is not None else None) if rt is not None]
        self.prefix = bool(runtimes) and all(rt.prefix for rt in runtimes)
        self._slices: dict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def gathered(
        self, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(weight, bias, groups) of the convolution over these active input / output channels."""
        if not self.prefix or (in_idx is None and out_idx is None):
            return self._gather(in_idx, out_idx)
        lengths = (None if in_idx is None else len(in_idx), None if out_idx is None else len(out_idx))
        key = (*lengths, self.weight.device, self.weight.dtype)
        if key not in self._slices:  # a few widths per site: each one's contiguous weights, kept
            weight, bias, groups = self._gather(in_idx, out_idx)
            self._slices[key] = (weight.contiguous(), bias.contiguous(), groups)
        return self._slices[key]

    def _apply(self, fn, recurse: bool = True):  # .to(), .double(): the kept slices are of the old weights
        self._slices = {}
        return super()._apply(fn, recurse)

    def _gather(
        self, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        weight, bias = self.weight, self.bias
        if self.depthwise:
            if in_idx is not None:
                weight, bias = weight.index_select(0, in_idx), bias.index_select(0, in_idx)
            return weight, bias, weight.shape[0]
        if out_idx is not None:
            weight, bias = weight.index_select(0, out_idx), bias.index_select(0, out_idx)
        if in_idx is not None:
            weight = weight.index_select(1, in_idx)
        return weight, bias, self.groups

    def run(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
        """The convolution itself (bias only / no outputs when every channel is closed)."""
        if weight.shape[0] == 0 or weight.shape[1] == 0:
            return self._empty(x, weight, bias)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_idx = self.in_rt.idx if self.in_rt is not None else None
        out_idx = None
        if self.out_gate is not None:
            summed = x.sum(dim=(2, 3))  # [B, k] over the channels actually present
            if in_idx is not None:  # the gate was trained on the full-width (zero-filled) input
                summed = summed.new_zeros(summed.shape[0], self.in_width).index_copy_(1, in_idx, summed)
            self.out_gate(summed, x.shape[2] * x.shape[3], self.out_rt)
            if self.out_rt.groups is not None:
                return self._grouped(x, self.out_rt, produce=True)
            out_idx = self.out_rt.idx
        elif self.in_rt is not None and self.in_rt.groups is not None:
            return self._grouped(x, self.in_rt, produce=self.depthwise)
        out = self.run(x, *self.gathered(in_idx, out_idx))
        mask = self.out_rt.mask if self.out_gate is not None else (self.in_rt.mask if self.depthwise else None)
        if mask is not None:
            out = out * mask[:, :, None, None]
        return out

    def _grouped(self, x: torch.Tensor, rt: SiteRuntime, produce: bool) -> torch.Tensor:
        """One narrow pass per sample group. ``produce``: the output is the site's packed tensor (producer, or
        depthwise inside the site); else this conv reads the packed site and writes a full-width output."""
        out = None
        whole = len(rt.groups) == 1  # one group holds the batch: no sample gather / scatter needed
        for g in rt.groups:
            xs = x if whole else x.index_select(0, g.samples)
            if self.out_gate is None:  # reading the packed site: this group's channels are the first k
                xs = xs[:, : g.idx.numel()]
                y = self.run(xs, *self.gathered(g.idx, None))
            else:
                y = self.run(xs, *self.gathered(None, g.idx))
            if produce and g.mask is not None:
                y = y * g.mask[:, :, None, None]
            if whole:
                return y
            if out is None:
                width = rt.width if produce else y.shape[1]
                out = y.new_zeros(x.shape[0], width, *y.shape[2:])
            out[:, : y.shape[1]].index_copy_(0, g.samples, y)
        return out

    def _empty(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """All channels closed: no filters to run (0 outputs) or no inputs to read (bias only)."""
        h, w = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        out = x.new_zeros(x.shape[0], weight.shape[0], ho, wo)
        return out + bias[None, :, None, None]


class DeployLinear(nn.Module):
    """A linear consumer of a site reached through flatten: each channel owns ``spatial`` input features."""

    def __init__(self, linear: nn.Linear, in_rt: SiteRuntime, in_width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.in_rt = in_rt
        self.spatial = linear.in_features // in_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.in_rt.idx
        if idx is None:
            return F.linear(x, self.weight, self.bias)
        if idx.numel() == 0:
            return self.bias.expand(x.shape[0], -1).clone()
        features = (idx[:, None] * self.spatial + torch.arange(self.spatial, device=idx.device)).flatten()
        return F.linear(x, self.weight.index_select(1, features), self.bias)


class DeployModel(nn.Module):
    """Inference-only executor of a gated model; see the module docstring for the strategies."""

    def __init__(self, model: nn.Module, runtimes: dict[str, SiteRuntime]) -> None:
        super().__init__()
        self.model = model
        self.runtimes = runtimes
        self.strategy = "auto"
        self.tuned: dict[int, str] = {}
        self.executors = nn.ModuleDict()  # name -> whole-model executor run as a strategy (``add_executor``)
        self.batch1_default = "gather"  # what ``auto`` runs at batch 1 before any autotune
        self.batched_default = "union"  # ... and at larger batches
        self.exclusive = False  # True: only the added executors compute this model (``add_executor``)
        # grouped packs a site's channels per group: possible when no gated producer reads another site
        # (ResNets, MobileNetV2), not for chains of sites (VGG, LeNet) or sites flattened into a linear layer
        self.groupable = not any(
            (isinstance(m, DeployConv) and m.out_gate is not None and m.in_rt is not None)
            or isinstance(m, DeployLinear)
            for m in model.modules()
        )
        self.eval()

    def add_executor(
        self, name: str, executor: nn.Module, batch1_default: bool = False, exclusive: bool = False
    ) -> None:
        """Run ``executor`` (a whole-model executor of the same gated model, equal outputs) as strategy ``name``;
        ``batch1_default``: ``auto`` runs it at batch 1 until an autotune says otherwise; ``exclusive``: the
        built-in strategies do not compute this model (each site runs its own gate: not the network-scope
        router's decision), so only added executors are offered, this one the default at every batch size."""
        if name in STRATEGIES:
            raise ValueError(f"{name!r} is a built-in deploy strategy")
        self.executors[name] = executor
        if batch1_default or exclusive:
            self.batch1_default = name
        if exclusive:
            self.batched_default, self.exclusive = name, True

    def candidates(self, batch: int = 2) -> tuple[str, ...]:
        """The strategies worth timing for this batch size: all but ``grouped`` for chains of sites, and not
        at batch 1, where it is ``gather``; then the added executors."""
        grouped = self.groupable and batch > 1
        if self.exclusive:
            return tuple(self.executors)
        return (*(s for s in STRATEGIES if s != "auto" and (s != "grouped" or grouped)), *self.executors)

    def train(self, mode: bool = True) -> DeployModel:
        """Deploy modules are inference-only: they stay in eval mode whatever is asked."""
        return super().train(False)

    def strategy_for(self, batch: int) -> str:
        if self.strategy not in (*STRATEGIES, *self.executors):
            allowed = ", ".join((*STRATEGIES, *self.executors))
            raise ValueError(f"unknown deploy strategy {self.strategy!r}; allowed: {allowed}")
        if self.exclusive and self.strategy in STRATEGIES and self.strategy != "auto":
            allowed = ", ".join(("auto", *self.executors))
            raise ValueError(
                f"strategy {self.strategy!r} does not compute this model (one width per input for the "
                f"network); allowed: {allowed}"
            )
        if self.strategy == "grouped" and not self.groupable:
            raise ValueError("strategy 'grouped' needs sites whose producers read no other site; use 'union'")
        if self.strategy != "auto":
            return self.strategy
        if batch in self.tuned:
            return self.tuned[batch]
        return self.batch1_default if batch == 1 else self.batched_default

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strategy = self.strategy_for(x.shape[0])
        if strategy in self.executors:
            return self.executors[strategy](x)
        for rt in self.runtimes.values():
            rt.strategy = strategy
        if strategy == "gather" and x.shape[0] > 1:
            return torch.cat([self.model(x[i : i + 1]) for i in range(x.shape[0])])
        return self.model(x)

    @torch.no_grad()
    def autotune(
        self, example: torch.Tensor, candidates: Sequence[str] | None = None, min_run_time: float = 0.1
    ) -> str:
        """Time each strategy (default: every one this model can run) on ``example`` with the project's one
        timing (``timing.interleaved_timing``: interleaved rounds until they agree) and use the fastest for this
        batch size from now on; ``min_run_time``: seconds of timing per strategy and round set."""
        candidates = candidates or self.candidates(example.shape[0])
        for name in candidates:
            tune = getattr(self.executors[name], "autotune", None) if name in self.executors else None
            if tune is not None:  # an executor with choices of its own (fixed-k: narrow or wide per layer)
                tune(example)
        runs = {name: functools.partial(self._run_as, name) for name in candidates}
        timed, _ = interleaved_timing(runs, example, torch.get_num_threads(), min_run_time)
        best = min(timed, key=lambda name: timed[name].ms)
        self.tuned[example.shape[0]] = best
        return best

    def _run_as(self, strategy: str, x: torch.Tensor) -> torch.Tensor:
        saved, self.strategy = self.strategy, strategy
        try:
            return self(x)
        finally:
            self.strategy = saved


def to_deploy(model: nn.Module) -> DeployModel:
    """Convert a trained gated model (``model.gate_set``) to a ``DeployModel``; the original stays as is.
    Network-scope width gates run as the routed executor only (``routed_deploy``)."""
    if model.gate_set.router is not None:
        return routed_deploy(RoutedWidths(model))
    copied = gated_copy(model)
    runtimes = {name: SiteRuntime(width, copied.gates[name].tiers is not None) for name, width in copied.widths.items()}

    def make_conv(conv: nn.Conv2d, in_site: str | None, out_site: str | None, depthwise: bool, width: int):
        return DeployConv(
            conv,
            runtimes[in_site] if in_site else None,
            runtimes[out_site] if out_site else None,
            copied.gates[out_site] if out_site else None,
            depthwise=depthwise,
            in_width=width,
        )

    def make_linear(linear: nn.Linear, in_site: str) -> DeployLinear:
        return DeployLinear(linear, runtimes[in_site], copied.widths[in_site])

    return DeployModel(swap_layers(copied, make_conv, make_linear), runtimes)


def routed_deploy(executor: nn.Module) -> DeployModel:
    """A ``DeployModel`` that only ``executor`` computes (network-scope width gates: the routed executor). The
    per-site strategies would run each site's own gate, not the router's decision, so no per-site copy is built
    (it would fold BN into the convolutions, which a BN per width does not allow)."""
    deploy = DeployModel(nn.Identity(), {})
    deploy.add_executor("routed", executor, exclusive=True)
    return deploy
