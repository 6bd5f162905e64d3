"""``--init`` from a deeper or wider CIFAR ResNet: the run's shallower, narrower ResNet cut out of a trained one.

A ResNet-8 in front of a cascade (BENCHMARKS, "A shallow first member") runs at the speed its few layers allow,
but from scratch it needs the epochs of a dense model. Cut out of the dense ResNet-20 it starts from that
model's features: each stage keeps its first blocks (the first one downsamples, so the strides and shortcuts
stay), and each layer its most important channels:
- a block's inner channels by the L1 norm of their filters, as l1-filter ranks them;
- a stage's residual stream by the summed |gamma| of every BatchNorm that writes it (the stem's, every block's
  last one), since the stream is one set of channels from the stage's first block to its last.
The option-A shortcut fixes where the previous stage's stream lands in the next one (zero-padded around it), so
those channels follow the previous stage's choice and only the new ones are ranked. The cut model then
fine-tunes as any ``--init`` run does: its activations are not the dense model's, so it needs a few epochs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import ConfigError
from .resnet_cifar import BasicBlock, CifarResNet

STAGES = ("layer1", "layer2", "layer3")


def cut_refusal(source: nn.Module, target: nn.Module) -> str | None:
    """Why ``target`` cannot be cut out of ``source`` (None: it can)."""
    if not (isinstance(source, CifarResNet) and isinstance(target, CifarResNet)):
        return "only a CIFAR ResNet (resnet8 ... resnet110) can be cut out of another one"
    prev_src = prev_dst = 0  # the stream a stage's shortcut carries in (the stem's channels are all new)
    for stage in STAGES:
        src, dst = getattr(source, stage), getattr(target, stage)
        if len(dst) > len(src):
            return f"{stage} has {len(dst)} blocks here but {len(src)} in the --init model, which must be as deep"
        if (
            stream_width(dst) > stream_width(src)
            or stream_width(dst) - prev_dst > stream_width(src) - prev_src  # the channels this stage adds
            or any(b.conv1.out_channels > a.conv1.out_channels for a, b in zip(src, dst, strict=False))
        ):
            return f"{stage} is wider here than in the --init model, which must be as wide in every stage"
        prev_src, prev_dst = stream_width(src), stream_width(dst)
    if source.conv1.in_channels != target.conv1.in_channels or source.fc.out_features != target.fc.out_features:
        return "the --init model was made for other data (input channels or classes differ)"
    return None


def stream_width(stage: nn.Sequential) -> int:
    return stage[0].conv2.out_channels


def top(score: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` largest scores, in channel order."""
    return score.topk(k).indices.sort().values


def stream_channels(source: CifarResNet, target: CifarResNet) -> list[torch.Tensor]:
    """Per stage: for each of the target's residual-stream channels, the source channel it takes."""
    maps: list[torch.Tensor] = []
    prev_src = prev_dst = None
    for stage in STAGES:
        src, dst = getattr(source, stage), getattr(target, stage)
        score = sum(block.bn2.weight.detach().abs() for block in src)
        if prev_src is None:  # the first stage's stream starts at the stem
            maps.append(top(score + source.bn1.weight.detach().abs(), stream_width(dst)))
        else:
            lo_src = (stream_width(src) - prev_src) // 2  # where the shortcut pads the previous stream in
            lo_dst = (stream_width(dst) - prev_dst) // 2
            carried = maps[-1] + lo_src
            fresh_pool = torch.tensor(
                [c for c in range(stream_width(src)) if not lo_src <= c < lo_src + prev_src], dtype=torch.long
            )
            fresh = fresh_pool[top(score[fresh_pool], stream_width(dst) - prev_dst)]
            maps.append(torch.cat([fresh[:lo_dst], carried, fresh[lo_dst:]]))
        prev_src, prev_dst = stream_width(src), stream_width(dst)
    return maps


@torch.no_grad()
def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, index: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[index])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def copy_block(dst: BasicBlock, src: BasicBlock, stream_in: torch.Tensor, stream_out: torch.Tensor) -> None:
    inner = top(src.conv1.weight.abs().sum((1, 2, 3)), dst.conv1.out_channels)
    dst.conv1.weight.copy_(src.conv1.weight[inner][:, stream_in])
    copy_bn(dst.bn1, src.bn1, inner)
    dst.conv2.weight.copy_(src.conv2.weight[stream_out][:, inner])
    copy_bn(dst.bn2, src.bn2, stream_out)


@torch.no_grad()
def cut_into(target: nn.Module, source: nn.Module) -> None:
    """Fill ``target``'s weights from ``source`` (see the module's doc); refuses in one line what cannot be cut."""
    if (why := cut_refusal(source, target)) is not None:
        raise ConfigError(f"--init: {why}")
    maps = stream_channels(source, target)
    target.conv1.weight.copy_(source.conv1.weight[maps[0]])
    copy_bn(target.bn1, source.bn1, maps[0])
    stream_in = maps[0]
    for stage, stream_out in zip(STAGES, maps, strict=True):
        for dst, src in zip(getattr(target, stage), getattr(source, stage), strict=False):
            copy_block(dst, src, stream_in, stream_out)
            stream_in = stream_out
    target.fc.weight.copy_(source.fc.weight[:, stream_in])
    target.fc.bias.copy_(source.fc.bias)
