"""Channel sites of a model outside the zoo, found by torch-pruning's dependency graph (the ``prune`` extra).

Zoo models list their sites by hand. For any other model, torch-pruning traces one forward pass and, for a chosen
layer's output channels, returns every coupled layer (a "group"). A group becomes a site when exactly one conv or
linear layer produces those channels: its BN, depthwise convs (which carry the channels through) and the layers
that read them (consumers) are then sliced with it. Groups with several producers (channels tied by a residual
add or a concat) and the network's output layer are left alone, as the zoo's sites leave them.
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


def _site_from_group(root: str, group: Any, names: dict[nn.Module, str], order: dict[str, int]) -> ChannelSite | None:
    producers, norms, passthrough, consumers = [], [], [], []
    for dep, _ in group:
        path = names.get(dep.target.module)
        if path is None:
            continue  # element-wise ops, reshapes, concats: nothing to slice
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
        else:
            return None  # a layer slice_site cannot cut (LayerNorm, GroupNorm, PReLU, ...): leave the group alone
    if producers != [root] or not consumers:
        return None
    bn = norms[0] if norms and (not passthrough or order[norms[0]] < min(order[p] for p in passthrough)) else None
    rest = sorted([n for n in norms if n != bn] + passthrough, key=order.__getitem__)
    return ChannelSite(root, root, bn, tuple(sorted(set(consumers), key=order.__getitem__)), tuple(rest))


def dependency_sites(model: nn.Module, input_shape: Sequence[int]) -> list[ChannelSite]:
    """The channel sites of ``model`` (any ``nn.Module`` of convs, BNs, depthwise convs and linears)."""
    tp = _torch_pruning()
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    model.train(was_training)
    names = {module: path for path, module in model.named_modules()}
    order = {path: i for i, path in enumerate(names.values())}
    sites = []
    for path, module in model.named_modules():
        if not _is_dense_layer(module):
            continue
        prune_out = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        site = _site_from_group(path, graph.get_pruning_group(module, prune_out, idxs=[0]), names, order)
        if site is not None:
            sites.append(site)
    return sites


def attach_dependency_sites(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """Give a model outside the zoo a ``channel_sites()``, so every dynprune method can prune it."""
    sites = dependency_sites(model, input_shape)
    model.channel_sites = functools.partial(list, sites)
    return model
