"""Inference-time folding: BatchNorm merged into the preceding convolution (eval mode only).

Conv -> BN pairs are found from the traced graph (torch.fx), not from module names, so a BN is folded only
where the forward pass really applies it directly to that convolution's output.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .sites import get_module, set_module


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """{conv path: bn path} for every BatchNorm2d fed only by one Conv2d's output."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), nn.Conv2d)
            and len(src.users) == 1
        ):
            pairs[src.target] = node.target
    return pairs


def folded_conv(model: nn.Module, conv_path: str, bn_path: str | None) -> nn.Conv2d:
    """The conv at ``conv_path`` with the BN at ``bn_path`` (if any) merged into its weight and bias."""
    conv = get_module(model, conv_path)
    if bn_path is None:
        return conv
    return fuse_conv_bn_eval(conv.eval(), get_module(model, bn_path).eval())


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BN merged into its conv (the dense baseline)."""
    model = copy.deepcopy(model).eval()
    for conv_path, bn_path in conv_bn_pairs(model).items():
        set_module(model, conv_path, folded_conv(model, conv_path, bn_path))
        set_module(model, bn_path, nn.Identity())
    return model
