"""Inference-time transforms shared by every executor that is timed (dense baseline, deploy mode, pruned).

- BatchNorm merged into the preceding convolution (eval mode only). Conv -> BN pairs are found from the traced
  graph (torch.fx), not from module names, so a BN is folded only where the forward pass really applies it
  directly to that convolution's output.
- Max-pooling run in channels-last layout: PyTorch's NCHW CPU kernel is much slower (BENCHMARKS.md, "Design
  measurements"), and a layer without MACs that costs a tenth of the dense time would hide a fair share of any
  MAC saving. Max is exact, so outputs are identical.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
import torch.nn.functional as F
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


@torch.fx.wrap
def max_pool_channels_last(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """``pool(x)`` computed on a channels-last copy of ``x``, returned in ``x``'s layout (a leaf for torch.fx)."""
    if x.dim() != 4:
        return F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    x = x.contiguous(memory_format=torch.channels_last)
    out = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    return out.contiguous(memory_format=layout)


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed in channels-last layout (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            return super().forward(x)
        return max_pool_channels_last(x, self)


def fast_pooling(model: nn.Module) -> nn.Module:
    """Swap every ``nn.MaxPool2d`` of ``model`` (in place) for ``ChannelsLastMaxPool2d``; returns ``model``."""
    for path, module in list(model.named_modules()):
        if type(module) is nn.MaxPool2d:
            pool = ChannelsLastMaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation)
            pool.return_indices, pool.ceil_mode = module.return_indices, module.ceil_mode
            set_module(model, path, pool)
    return model


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BN merged into its conv and the fast pooling
    (the dense baseline)."""
    model = copy.deepcopy(model).eval()
    for conv_path, bn_path in conv_bn_pairs(model).items():
        set_module(model, conv_path, folded_conv(model, conv_path, bn_path))
        set_module(model, bn_path, nn.Identity())
    return fast_pooling(model)
