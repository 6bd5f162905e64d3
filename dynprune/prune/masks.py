"""Masks through ``torch.nn.utils.prune``: masks are buffers (``<name>_mask``) re-applied by its hooks, and
``prune.remove`` makes them permanent. Nothing here re-implements what that module does.

A structured (filter) mask zeroes a site's channels everywhere they are produced: the producer's filters and
bias, its BN's scale and shift, and the channel-wise passthrough layers, so the channel is exactly zero where the
consumers read it (BN's shift would otherwise leak a constant).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from ..sites import ChannelSite, get_module


def site_parameters(model: nn.Module, site: ChannelSite) -> Iterator[tuple[nn.Module, str]]:
    """(module, parameter name) pairs whose first dimension is the site's channels."""
    for path in (site.producer, site.bn, *site.passthrough):
        if path is None:
            continue
        module = get_module(model, path)
        for name in ("weight", "bias"):
            if getattr(module, name, None) is not None:
                yield module, name


def current(module: nn.Module, name: str) -> torch.Tensor:
    """The parameter as trained (``<name>_orig`` once a mask is attached)."""
    return getattr(module, f"{name}_orig", getattr(module, name))


def channel_mask(model: nn.Module, site: ChannelSite) -> torch.Tensor:
    """1 for channels kept, 0 for channels removed (from the producer's weight mask; all ones if unmasked)."""
    producer = get_module(model, site.producer)
    mask = getattr(producer, "weight_mask", None)
    if mask is None:
        return torch.ones(producer.weight.shape[0], device=producer.weight.device)
    return (mask.flatten(1).sum(dim=1) > 0).float()


def apply_channel_mask(model: nn.Module, site: ChannelSite, keep: torch.Tensor) -> None:
    """Mask the site's channels where ``keep`` is 0 (replacing any earlier channel mask of this site)."""
    for module, name in site_parameters(model, site):
        param = current(module, name)
        shape = (-1,) + (1,) * (param.dim() - 1)
        mask = keep.to(param.device, param.dtype).view(shape).expand_as(param).clone()
        if tprune.is_pruned(module) and hasattr(module, f"{name}_mask"):
            getattr(module, f"{name}_mask").copy_(mask)
        else:
            tprune.custom_from_mask(module, name, mask)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Conv and linear weights of the model (gates excluded)."""
    return [
        (m, "weight")
        for path, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not path.startswith("gate_set")
    ]


def make_permanent(model: nn.Module) -> None:
    """``prune.remove`` on every masked parameter: the zeros become part of the weights."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(module, hook._tensor_name)


def sparsity(model: nn.Module) -> tuple[float, dict[str, float]]:
    """(global, per-layer) fraction of zero weights over conv and linear layers."""
    per_layer, zeros, total = {}, 0, 0
    names = {id(m): p for p, m in model.named_modules()}
    for module, name in prunable_weights(model):
        w = getattr(module, name)
        z = int((w == 0).sum())
        per_layer[names[id(module)]] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return zeros / max(total, 1), per_layer
