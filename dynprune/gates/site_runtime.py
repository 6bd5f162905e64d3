"""What one gated site decides per inference call: the folded gate (``DeployGate``) reads the producer's pooled
input and fills the site's ``SiteRuntime`` (active channels, per-sample mask, or groups of samples that share a
channel set), which the deploy layers then narrow and widen their tensors by."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .module import ChannelGate

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

    def __init__(self, channels: int, prefix: bool = False) -> None:
        self.channels = channels
        self.prefix = prefix  # nested-width gates: the active channels are always the first len(idx)
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

    def __init__(self, gate: ChannelGate, keep: int | None = None, tiers: torch.Tensor | None = None) -> None:
        super().__init__()
        self.keep = keep  # fixed-count gates: the k highest logits open, else logit >= 0
        # ordinal (nested-width) gates: group g opens iff its tier <= the count of leading logits >= 0
        self.register_buffer("tiers", tiers)
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
        if self.tiers is not None:
            opened = ((logits < 0).cumsum(dim=1) == 0).sum(dim=1)  # [B] tiers past the narrowest
            open_ = self.tiers[None, :] <= opened[:, None]
        elif self.keep is None:
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
