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
  batches -> ``union``;
  ``autotune()`` replaces this rule by the fastest strategy measured per batch size on this machine, ``grouped``,
  ``masked`` and added executors included.
- added executors (``add_executor``): whole-model executors of the same gated model run as a strategy of their
  own; ``fixedk`` (``fixed_k.py``, static shapes for fixed-count gates) is added by the gated method where the
  model supports it: the fastest eager executor at batch 1 in every ResNet-20/56 row of BENCHMARKS.md.
Gather: ``index_select`` on the folded weight per call (output filters: a contiguous row copy; input channels:
a strided copy). Measured on the 2-core CPU (half of the channels of a [C, C, 3, 3] weight):
- ``index_select(1, idx)`` 0.44 ms at C=512, 0.087 at 256; advanced indexing ``w[:, idx]`` 1.92 / 0.26 ms,
  a boolean mask 1.74 / 0.50 ms, an input-major copy + transpose 0.48 / 0.20 ms: index_select wins everywhere.
- Input-major (flipped) weights gathered by rows and run as ``conv_transpose2d`` (stride 1): 25.0 vs 25.3 ms
  for ResNet-18 at batch 1, within noise, and 2.6x slower at 64 channels x 56x56: not used.
- At ResNet-20 sizes (16-64 channels, <= 32x32) PyTorch runs batch-1 3x3 convs as im2col + GEMM, whose cost
  is set by the input width: 9 of 16 output filters cost 116 us vs 113 us for all 16, while half of the input
  channels saves ~40%. So on small layers only the consumer side of a site gets cheaper (see ``bench dynamic
  --breakdown`` for the resulting ceiling).
- Trained gates repeat themselves: on Fashion-MNIST test images the 8 most common channel sets of each
  ResNet-20 site cover 89-100% of the samples, which is what ``grouped`` exploits; at batch 64 on the 2-core
  CPU it beat ``union`` for the trained ste model (34.1 vs 37.2 ms) but not for the gumbel one (32.3 vs 28.3
  ms): the per-group sample gather and scatter of activations costs about what the narrower passes save.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..fold import conv_bn_pairs, fast_pooling, folded_conv
from ..sites import ChannelSite, set_module, site_width
from ..timing import interleaved_timing
from .module import ChannelGate, GateSet

STRATEGIES = ("auto", "gather", "union", "grouped", "masked")
#: grouped: a channel set shared by at least this many samples of the batch gets its own narrow pass...
MIN_GROUP_SIZE = 4
#: ...for at most this many sets per site (each pass costs ~6 ops); the other samples share one union pass
MAX_GROUPS = 8


@dataclass
class SampleGroup:
    """Samples of a batch that one pass computes: their channel set and, for a union of sets, the mask."""

    samples: torch.Tensor  # [n] batch positions
    idx: torch.Tensor  # [k] active channels of the site
    mask: torch.Tensor | None  # [n, k] float where the samples' own sets differ, else None


class SiteRuntime:
    """Per-call state of one site: active channel indices (None = all) and an optional per-sample mask, or
    (``grouped``) the sample groups; the site's tensor is then *packed*: sample s of group g holds its k_g
    channels in the first k_g slots, ``width`` = the largest k_g."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.idx: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None  # [B, len(idx)] float, only when samples differ (union/masked)
        self.groups: list[SampleGroup] | None = None
        self.width = channels
        self.strategy = "gather"


def group_samples(open_: torch.Tensor, dtype: torch.dtype) -> tuple[list[SampleGroup], int]:
    """Split a batch's decisions [B, C] into groups of equal channel sets (the common ones) plus one union
    group of the rest; returns (groups, packed width)."""
    codes, inverse, counts = torch.unique(open_, dim=0, return_inverse=True, return_counts=True)
    order = counts.argsort(descending=True)[:MAX_GROUPS].tolist()
    common = [c for c in order if counts[c] >= MIN_GROUP_SIZE]
    groups, rest = [], torch.ones(open_.shape[0], dtype=torch.bool, device=open_.device)
    for c in common:
        members = inverse == c
        rest &= ~members
        groups.append(SampleGroup(members.nonzero().flatten(), codes[c].nonzero().flatten(), None))
    if bool(rest.any()):
        samples = rest.nonzero().flatten()
        sub = open_.index_select(0, samples)
        idx = sub.any(dim=0).nonzero().flatten()
        sub = sub[:, idx]
        groups.append(SampleGroup(samples, idx, None if bool(sub.all()) else sub.to(dtype)))
    return groups, max(g.idx.numel() for g in groups)


class DeployGate(nn.Module):
    """A trained ChannelGate for inference: its BN folded into the first linear layer, fewest ops per call
    (at batch 1 on small images the gates' per-op overhead is what competes with the saved convolution time).

    The pooled input arrives as a spatial *sum* (one reduction instead of sum + divide); the 1/(H*W) of the
    average is folded into the first weight, kept per input size. Both weights are stored transposed for
    ``addmm`` (measured 9 vs 14 us for the two layers of a ResNet-20 gate at batch 1).
    """

    def __init__(self, gate: ChannelGate, keep: int | None = None) -> None:
        super().__init__()
        self.keep = keep  # fixed-count gates: the k highest logits open, else logit >= 0
        bn = gate.bn
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # [hidden]
        self.register_buffer("w1t", (gate.fc1.weight.detach() * scale[:, None]).t().contiguous())
        self.register_buffer("b1", bn.bias.detach() - bn.running_mean * scale)
        self.register_buffer("w2t", gate.fc2.weight.detach().t().contiguous())
        self.register_buffer("b2", gate.fc2.bias.detach().clone())
        self.boosted = gate.boost is not None  # feature boosting: the kept channels scaled per input
        if self.boosted:
            self.register_buffer("w3t", gate.boost.weight.detach().t().contiguous())
            self.register_buffer("b3", gate.boost.bias.detach().clone())
        self.group = gate.channels // gate.groups
        self._w1t_per_size: dict[int, torch.Tensor] = {}

    def _w1t_for(self, pixels: int) -> torch.Tensor:
        w1t = self._w1t_per_size.get(pixels)
        if w1t is None or w1t.device != self.w1t.device or w1t.dtype != self.w1t.dtype:
            w1t = self._w1t_per_size[pixels] = self.w1t / pixels
        return w1t

    def logits(self, summed: torch.Tensor, pixels: int) -> torch.Tensor:
        """[B, G] gate logits from the spatially summed input [B, C_in] over ``pixels`` positions."""
        return self.logits_and_scale(summed, pixels)[0]

    def logits_and_scale(self, summed: torch.Tensor, pixels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([B, G] logits, [B, C] per-channel boost scale of a boosted gate, else None)."""
        hidden = torch.addmm(self.b1, summed, self._w1t_for(pixels)).relu()
        logits = torch.addmm(self.b2, hidden, self.w2t)
        if not self.boosted:
            return logits, None
        scale = 1.0 + torch.tanh(torch.addmm(self.b3, hidden, self.w3t))  # [B, G]
        return logits, (scale.repeat_interleave(self.group, dim=1) if self.group > 1 else scale)

    def forward(self, summed: torch.Tensor, pixels: int, rt: SiteRuntime) -> None:
        """Eval-mode decision from the spatially summed input [B, C_in] over ``pixels`` positions; fills
        ``rt.idx`` and ``rt.mask`` (a boosted gate's scale is multiplied into the mask: its site has no
        channel-wise layer after the producer, so the producer's output is the masked point)."""
        logits, scale = self.logits_and_scale(summed, pixels)  # [B, G], [B, C] | None
        self._decide(logits, summed.dtype, rt)
        if scale is not None:
            _boost(rt, scale)

    def _decide(self, logits: torch.Tensor, dtype: torch.dtype, rt: SiteRuntime) -> None:
        if self.keep is None:
            open_ = logits >= 0
        else:
            open_ = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(self.keep, dim=1).indices, True)
        if self.group > 1:
            open_ = open_.repeat_interleave(self.group, dim=1)  # [B, C]
        rt.groups = None
        if rt.strategy == "grouped" and open_.shape[0] > 1:
            rt.idx, rt.mask = None, None
            rt.groups, rt.width = group_samples(open_, dtype)
            return
        if rt.strategy == "masked":
            rt.idx = None
            rt.mask = None if bool(open_.all()) else open_.to(dtype)
            return
        if open_.shape[0] == 1:  # one sample: its own channel set, nothing to re-mask
            idx = open_.view(-1).nonzero().view(-1)
            rt.idx = None if idx.numel() == rt.channels else idx
            rt.mask = None
            return
        idx = open_.any(dim=0).nonzero().flatten()  # union over the batch
        rt.idx = None if idx.numel() == rt.channels else idx
        sub = open_ if rt.idx is None else open_[:, rt.idx]
        rt.mask = None if bool(sub.all()) else sub.to(dtype)


def _boost(rt: SiteRuntime, scale: torch.Tensor) -> None:
    """Multiply a boosted site's per-sample channel scale [B, C] into the masks its producer applies."""
    if rt.groups is not None:
        for g in rt.groups:
            part = scale.index_select(0, g.samples).index_select(1, g.idx)  # [n, k]
            g.mask = part if g.mask is None else g.mask * part
        return
    part = scale if rt.idx is None else scale.index_select(1, rt.idx)
    rt.mask = part if rt.mask is None else rt.mask * part


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

    def gathered(
        self, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(weight, bias, groups) of the convolution over these active input / output channels."""
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
        # grouped packs a site's channels per group: possible when no gated producer reads another site
        # (ResNets, MobileNetV2), not for chains of sites (VGG, LeNet) or sites flattened into a linear layer
        self.groupable = not any(
            (isinstance(m, DeployConv) and m.out_gate is not None and m.in_rt is not None)
            or isinstance(m, DeployLinear)
            for m in model.modules()
        )
        self.eval()

    def add_executor(self, name: str, executor: nn.Module, batch1_default: bool = False) -> None:
        """Run ``executor`` (a whole-model executor of the same gated model, equal outputs) as strategy ``name``;
        ``batch1_default``: ``auto`` runs it at batch 1 until an autotune says otherwise."""
        if name in STRATEGIES:
            raise ValueError(f"{name!r} is a built-in deploy strategy")
        self.executors[name] = executor
        if batch1_default:
            self.batch1_default = name

    def candidates(self, batch: int = 2) -> tuple[str, ...]:
        """The strategies worth timing for this batch size: all but ``grouped`` for chains of sites, and not
        at batch 1, where it is ``gather``; then the added executors."""
        grouped = self.groupable and batch > 1
        return (*(s for s in STRATEGIES if s != "auto" and (s != "grouped" or grouped)), *self.executors)

    def train(self, mode: bool = True) -> DeployModel:
        """Deploy modules are inference-only: they stay in eval mode whatever is asked."""
        return super().train(False)

    def strategy_for(self, batch: int) -> str:
        if self.strategy not in (*STRATEGIES, *self.executors):
            allowed = ", ".join((*STRATEGIES, *self.executors))
            raise ValueError(f"unknown deploy strategy {self.strategy!r}; allowed: {allowed}")
        if self.strategy == "grouped" and not self.groupable:
            raise ValueError("strategy 'grouped' needs sites whose producers read no other site; use 'union'")
        if self.strategy != "auto":
            return self.strategy
        if batch in self.tuned:
            return self.tuned[batch]
        return self.batch1_default if batch == 1 else "union"

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
    gates = {s.name: DeployGate(gate_set.gate(s.name), gate_set.fixed_keep(s.name)) for s in sites}
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


def to_deploy(model: nn.Module) -> DeployModel:
    """Convert a trained gated model (``model.gate_set``) to a ``DeployModel``; the original stays as is."""
    copied = gated_copy(model)
    runtimes = {name: SiteRuntime(width) for name, width in copied.widths.items()}

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
