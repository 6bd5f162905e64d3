"""Channel sites: the abstraction that dynamic gates, static pruning, the RL agent and the cost model share.

A site is a set of channels that can be switched off together without breaking any shape: the output channels
of a ``producer`` conv (and its ``bn``), carried unchanged through optional channel-wise ``passthrough``
layers (a depthwise conv and its BN in MobileNetV2), and read as input channels by the ``consumers``. Residual
sums are never inside a site, so removing a site's channels never touches a skip connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import skip_init

#: why a model can be neither gated nor pruned by channels (said wherever a method finds no site)
NO_SITES = (
    "the model has no channel site (a conv or linear layer whose output channels another conv or linear layer "
    "reads), so it has no channels to gate or remove"
)


@dataclass(frozen=True)
class ChannelSite:
    """Module paths (as in ``model.named_modules()``) of the layers one set of channels flows through."""

    name: str
    producer: str
    bn: str | None
    consumers: tuple[str, ...]
    passthrough: tuple[str, ...] = ()

    @property
    def mask_point(self) -> str:
        """Module whose output is multiplied by a channel mask: the last per-channel layer before consumers.

        After it only element-wise ops with f(0) = 0 (ReLU, ReLU6, pooling) come before the consumers, so a
        zeroed channel reaches the consumers as exact zeros.
        """
        if self.passthrough:
            return self.passthrough[-1]
        return self.bn or self.producer


def chained_sites(sites: Sequence[ChannelSite]) -> dict[str, str]:
    """Sites whose channels feed another site's producer (a chain of sites, as in VGG and LeNet): site -> the
    producer it feeds. Executors that pack or fix a site's channels per call need none."""
    producers = {s.producer for s in sites}
    found = {}
    for s in sites:
        chained = producers.intersection((*s.consumers, *s.passthrough))
        if chained:
            found[s.name] = sorted(chained)[0]
    return found


def linear_read_sites(model: nn.Module, sites: Sequence[ChannelSite]) -> dict[str, str]:
    """Sites a linear layer reads (flattened): site -> that layer."""
    found = {}
    for s in sites:
        linear = [c for c in s.consumers if isinstance(get_module(model, c), nn.Linear)]
        if linear:
            found[s.name] = linear[0]
    return found


def probe_forward(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """The model's output for one all-zero input, in eval mode without gradients (its mode restored after):
    how a model's structure, cost or soundness is probed."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the module at ``path``; the new one keeps the old one's train/eval mode."""
    parent_path, _, attr = path.rpartition(".")
    module.train(model.get_submodule(path).training)
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, module)


def site_width(model: nn.Module, site: ChannelSite) -> int:
    producer = get_module(model, site.producer)
    return producer.out_channels if isinstance(producer, nn.Conv2d) else producer.out_features


class SiteMask:
    """Multiplies a site's channels by a mask through a forward hook on its ``mask_point``.

    ``mask`` is [C] (same for every sample) or [B, C] (per sample). Used for static masks, for testing that
    slicing equals masking, and by dynamic gates.
    """

    def __init__(self, model: nn.Module, site: ChannelSite, mask: torch.Tensor) -> None:
        self.mask = mask
        self.handle = get_module(model, site.mask_point).register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(output.dtype)
        shape = (-1, output.shape[1]) + (1,) * (output.dim() - 2)
        return output * (m.view(shape) if m.dim() == 2 else m.view(1, *shape[1:]))

    def remove(self) -> None:
        self.handle.remove()


# --------------------------------------------------------------------------------------- physical slicing
# skip_init: the sliced layers' weights are copied in, so no random initialisation (which would also advance
# the global RNG and make a seeded search depend on how many models it sliced).
def _slice_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    depthwise = conv.groups > 1
    if depthwise:
        if conv.groups != conv.in_channels or conv.groups != conv.out_channels:
            raise ValueError("only depthwise grouped convs can be sliced (groups == in == out channels)")
        idx = out_idx if out_idx is not None else in_idx
        weight = weight[idx]
        bias = bias[idx] if bias is not None else None
        out_c = in_c = groups = len(idx)
    else:
        if out_idx is not None:
            weight = weight[out_idx]
            bias = bias[out_idx] if bias is not None else None
        if in_idx is not None:
            weight = weight[:, in_idx]
        out_c, in_c, groups = weight.shape[0], weight.shape[1], 1
    new = skip_init(
        nn.Conv2d,
        in_c,
        out_c,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups,
        bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
    )
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new.to(conv.weight.device)


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor, same_class: bool = False) -> nn.BatchNorm2d:
    """``idx``'s channels of ``bn``: a plain BatchNorm2d (hard pruning: a deploy model), or for a reorder in
    training (``same_class``) a SyncBatchNorm stays one (``--sync-bn``)."""
    if same_class and isinstance(bn, nn.SyncBatchNorm):
        args = (len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new = nn.SyncBatchNorm(*args, process_group=bn.process_group)
    else:
        new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[idx])
        new.bias.data.copy_(bn.bias.detach()[idx])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.weight.device if bn.affine else bn.running_mean.device)


def _slice_linear(linear: nn.Linear, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None, in_width: int):
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None:
        # A conv feeding a linear through flatten: each channel owns `spatial` consecutive input features.
        spatial = linear.in_features // in_width
        weight = weight.view(weight.shape[0], in_width, spatial)[:, in_idx].reshape(weight.shape[0], -1)
    new = skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias is not None, device=linear.weight.device)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new.to(linear.weight.device)


def slice_site(model: nn.Module, site: ChannelSite, keep: torch.Tensor) -> None:
    """Physically remove every channel of ``site`` not in ``keep`` (sorted indices), in place.

    The result computes exactly what the model computes with those channels masked to zero (up to float
    rounding), with fewer MACs and parameters.
    """
    width = site_width(model, site)
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if keep.numel() == 0 or keep.min() < 0 or keep.max() >= width:
        raise ValueError(f"site {site.name}: keep indices must be a non-empty subset of range({width})")
    _take_channels(model, site, keep, width)


def permute_site(model: nn.Module, site: ChannelSite, order: torch.Tensor) -> None:
    """Reorder the channels of ``site`` in place (channel ``i`` becomes ``order[i]``'s): the model computes exactly
    what it computed (up to float rounding); what nested-width gates need, whose kept channels are a prefix."""
    width = site_width(model, site)
    order = torch.as_tensor(order, dtype=torch.long)
    if not torch.equal(order.sort().values, torch.arange(width)):
        raise ValueError(f"site {site.name}: order must be a permutation of range({width})")
    _take_channels(model, site, order, width, same_class=True)


def _take_channels(
    model: nn.Module, site: ChannelSite, keep: torch.Tensor, width: int, same_class: bool = False
) -> None:
    """The site's channels ``keep`` (in that order) in every layer that writes or reads them."""
    producer = get_module(model, site.producer)
    if isinstance(producer, nn.Conv2d):
        set_module(model, site.producer, _slice_conv(producer, keep, None))
    else:
        set_module(model, site.producer, _slice_linear(producer, keep, None, width))
    for path in (site.bn, *site.passthrough):
        if path is None:
            continue
        module = get_module(model, path)
        if isinstance(module, _BatchNorm):  # SyncBatchNorm too: sliced into a plain BatchNorm2d
            set_module(model, path, _slice_bn(module, keep, same_class))
        elif isinstance(module, nn.Conv2d):
            set_module(model, path, _slice_conv(module, keep, keep))
        else:
            raise TypeError(f"site {site.name}: cannot slice {type(module).__name__} at {path}")
    for path in site.consumers:
        module = get_module(model, path)
        if isinstance(module, nn.Conv2d):
            set_module(model, path, _slice_conv(module, None, keep))
        elif isinstance(module, nn.Linear):
            set_module(model, path, _slice_linear(module, None, keep, width))
        else:
            raise TypeError(f"site {site.name}: cannot slice consumer {type(module).__name__} at {path}")


def slice_sites(model: nn.Module, sites: Sequence[ChannelSite], keep: Mapping[str, torch.Tensor]) -> None:
    """``slice_site`` for every site named in ``keep`` whose kept channels are fewer than its width."""
    for site in sites:
        if site.name in keep and len(keep[site.name]) < site_width(model, site):
            slice_site(model, site, keep[site.name])
