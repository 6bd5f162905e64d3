"""One cost model for every method: MACs and parameters for any choice of kept channels, and latency.

Units: MACs are multiply-accumulates for ONE sample. Papers' CNN "FLOPs" are MACs;
``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs = 2 x MACs. Only convolutions and linear layers
are counted (the convention of the pruning literature); BN, activations, pooling and sums are not.

Every counted layer records which channel site governs its output channels and which governs its input
channels. A layer's MACs are linear in each, so with keep fractions ``f`` the effective cost is exactly
``dense * f[out_site] * f[in_site]`` (a channel-wise layer, depthwise conv or BN, scales by one factor).
The same formula serves static keep ratios (floats) and per-sample gate decisions (tensors [B]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from .sites import ChannelSite, probe_forward

Fraction = float | torch.Tensor


@dataclass(frozen=True)
class LayerCost:
    name: str
    macs: int  # dense, one sample
    weight_params: int
    bias_params: int
    in_site: str | None
    out_site: str | None
    channelwise: bool  # depthwise conv or BN: its in and out channels are the same channels

    def scale(self, keep: Mapping[str, Fraction]) -> tuple[Fraction, Fraction]:
        """(factor for the weights/MACs, factor for the bias)."""
        f_out = keep.get(self.out_site, 1.0) if self.out_site else 1.0
        if self.channelwise:
            return f_out, f_out
        f_in = keep.get(self.in_site, 1.0) if self.in_site else 1.0
        return f_out * f_in, f_out


class CostModel:
    """MACs/params of a model for dense, per-site (static) and per-sample (dynamic) channel choices."""

    def __init__(self, layers: Sequence[LayerCost], site_widths: Mapping[str, int]) -> None:
        self.layers = list(layers)
        self.site_widths = dict(site_widths)
        self.dense_macs = int(sum(layer.macs for layer in self.layers))
        self.dense_params = int(sum(layer.weight_params + layer.bias_params for layer in self.layers))

    @classmethod
    def from_model(
        cls, model: nn.Module, input_shape: Sequence[int], sites: Sequence[ChannelSite] | None = None
    ) -> CostModel:
        """Trace one forward pass of a [1, *input_shape] input to read every layer's output size."""
        sites = list(sites if sites is not None else model.channel_sites())
        out_site, in_site, channelwise_site = {}, {}, {}
        for s in sites:
            out_site[s.producer] = s.name
            if s.bn:
                channelwise_site[s.bn] = s.name
            for p in s.passthrough:
                channelwise_site[p] = s.name
            for c in s.consumers:
                in_site[c] = s.name
        records: dict[str, int] = {}
        handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                handles.append(module.register_forward_hook(_recorder(records, name)))
        try:
            probe_forward(model, input_shape)
        finally:
            for h in handles:
                h.remove()
        layers = []
        for name, module in model.named_modules():
            bias = module.bias.numel() if getattr(module, "bias", None) is not None else 0
            if isinstance(module, nn.Conv2d | nn.Linear):
                if name not in records:
                    continue  # a layer the forward pass never ran costs nothing
                depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
                site = channelwise_site.get(name) if depthwise else out_site.get(name)
                layers.append(
                    LayerCost(name, records[name], module.weight.numel(), bias, in_site.get(name), site, depthwise)
                )
            elif isinstance(module, _BatchNorm) and module.affine:  # SyncBatchNorm (torchrun --sync-bn) too
                layers.append(LayerCost(name, 0, module.weight.numel(), bias, None, channelwise_site.get(name), True))
        widths = {s.name: _width(model, s) for s in sites}
        return cls(layers, widths)

    def macs(self, keep: Mapping[str, Fraction] | None = None) -> Fraction:
        """Effective MACs per sample; ``keep`` maps site name -> kept fraction (float, or tensor [B])."""
        keep = keep or {}
        self._check_sites(keep)
        return sum(layer.macs * layer.scale(keep)[0] for layer in self.layers)

    def params(self, keep: Mapping[str, float] | None = None) -> float:
        keep = keep or {}
        self._check_sites(keep)
        total = 0.0
        for layer in self.layers:
            w, b = layer.scale(keep)
            total += layer.weight_params * w + layer.bias_params * b
        return total

    def macs_from_masks(self, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample MACs [B] from per-sample 0/1 (or soft) channel masks [B, C] per site."""
        return self.macs({n: (m if m.is_floating_point() else m.float()).mean(dim=1) for n, m in masks.items()})

    def site_macs(self, site: str) -> int:
        """Dense MACs of every layer whose cost depends on ``site`` (producer, passthrough, consumers)."""
        return sum(layer.macs for layer in self.layers if site in (layer.in_site, layer.out_site))

    def _check_sites(self, keep: Mapping[str, Fraction]) -> None:
        unknown = set(keep) - set(self.site_widths)
        if unknown:
            raise KeyError(f"unknown sites {sorted(unknown)}; known: {list(self.site_widths)}")


def _width(model: nn.Module, site: ChannelSite) -> int:
    producer = model.get_submodule(site.producer)
    return producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features


def _recorder(records: dict[str, int], name: str):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            records[name] = records.get(name, 0) + output[0].numel() * k
        else:
            records[name] = records.get(name, 0) + output[0].numel() * module.in_features

    return hook


def flop_counter_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs per sample as PyTorch's shape-based FlopCounterMode sees them (its FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        probe_forward(model, input_shape)
    return counter.get_total_flops() // 2
