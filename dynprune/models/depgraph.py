"""Channel sites of a model outside the zoo, found by torch-pruning's dependency graph (the ``prune`` extra).

Zoo models list their sites by hand. For any other model, torch-pruning traces one forward pass and, for a chosen
layer's output channels, returns every coupled layer (a "group"). A group becomes a site when exactly one conv or
linear layer produces those channels: its BN, depthwise convs (which carry the channels through) and the layers
that read them (consumers) are then sliced with it. Groups with several producers (channels tied by a residual
add) and the network's output layer are left alone, as the zoo's sites leave them; channels joined with others by
a concat or split, or passing a grouped convolution, are left out with the reason said.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..sites import ChannelSite


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise ImportError("sites of models outside the zoo need torch-pruning: pip install 'dynprune[prune]'") from None
    return torch_pruning


def _is_dense_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


#: torch-pruning's ops that place channels at an offset among others (the consumer reads them shifted)
_OFFSET_OPS = {"CONCAT": "torch.cat", "SPLIT": "torch.split", "SLICE": "a slice", "UNBIND": "torch.unbind"}


def _site_from_group(
    root: str, group: Any, names: dict[nn.Module, str], order: dict[str, int]
) -> ChannelSite | str | None:
    """The site of ``root``'s output channels, or why they are left out (None: the network's output, or channels
    tied to another producer by a residual add, as the zoo's sites leave them)."""
    producers, norms, passthrough, consumers = [], [], [], []
    for dep, _ in group:
        kind = dep.target.type.name
        if kind in _OFFSET_OPS:
            return f"joined with other channels by {_OFFSET_OPS[kind]} (a consumer reads them at an offset)"
        path = names.get(dep.target.module)
        if path is None:
            continue  # element-wise ops, reshapes: nothing to slice
        module = dep.target.module
        # torch-pruning's handlers are bound methods named prune_out_channels / prune_in_channels.
        side = dep.handler.__name__
        if side == "prune_out_channels" and _is_dense_layer(module):
            producers.append(path)
        elif side == "prune_out_channels" and isinstance(module, nn.BatchNorm2d):
            norms.append(path)
        elif side == "prune_out_channels" and _is_depthwise(module):
            passthrough.append(path)
        elif side == "prune_in_channels" and _is_dense_layer(module):
            consumers.append(path)
        elif isinstance(module, nn.Conv2d) and module.groups > 1:
            return f"{path} is a grouped convolution (groups={module.groups}): its channels go group by group"
        else:  # a layer slice_site cannot cut (LayerNorm, GroupNorm, PReLU, ...): leave the group alone
            return f"{path} ({type(module).__name__}) reads or carries them and cannot be sliced"
    if producers != [root] or not consumers:
        return None
    bn = norms[0] if norms and (not passthrough or order[norms[0]] < min(order[p] for p in passthrough)) else None
    rest = sorted([n for n in norms if n != bn] + passthrough, key=order.__getitem__)
    return ChannelSite(root, root, bn, tuple(sorted(set(consumers), key=order.__getitem__)), tuple(rest))


def find_dependency_sites(model: nn.Module, input_shape: Sequence[int]) -> tuple[list[ChannelSite], dict[str, str]]:
    """(the channel sites of ``model``, {layer: why its output channels are not a site}) for any ``nn.Module`` of
    convs, BNs, depthwise convs and linears. Left out with a reason: channels joined with others by a concat or
    split (a consumer reads them at an offset), channels read or produced by a grouped (not depthwise)
    convolution, and channels that pass a layer that cannot be sliced."""
    tp = _torch_pruning()
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    model.train(was_training)
    names = {module: path for path, module in model.named_modules()}
    order = {path: i for i, path in enumerate(names.values())}
    sites, left_out = [], {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and not _is_depthwise(module):
            left_out[path] = f"a grouped convolution (groups={module.groups}): its channels go group by group"
            continue
        if not _is_dense_layer(module):
            continue
        prune_out = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        site = _site_from_group(path, graph.get_pruning_group(module, prune_out, idxs=[0]), names, order)
        if isinstance(site, ChannelSite):
            sites.append(site)
        elif site is not None:
            left_out[path] = site
    return sites, left_out


def dependency_sites(model: nn.Module, input_shape: Sequence[int]) -> list[ChannelSite]:
    """The channel sites of ``model`` (``find_dependency_sites`` without the reasons)."""
    return find_dependency_sites(model, input_shape)[0]


def attach_dependency_sites(model: nn.Module, input_shape: Sequence[int], speak: bool = True) -> nn.Module:
    """Give a model outside the zoo a ``channel_sites()``, so every dynprune method can prune it; the layers
    whose channels are left out, and why, are in ``model.sites_left_out`` (and printed unless ``speak`` is off)."""
    sites, left_out = find_dependency_sites(model, input_shape)
    model.channel_sites = functools.partial(list, sites)
    model.sites_left_out = left_out
    if speak:
        for path, reason in left_out.items():
            print(f"sites: the output channels of {path} are not a site: {reason}", flush=True)
    return model
