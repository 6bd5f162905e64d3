"""Where deploy mode's batch-1 time goes: gate cost, weight-gather cost, and the convolutions themselves.

Three executors of the same sample, with identical outputs, are timed against the dense (BN folded) model:

- ``deploy``: the real thing (gates decide, weights are gathered, narrow convolutions run);
- ``fixed``: the sample's channel sets recorded once, gates skipped (weights still gathered every call);
- ``presliced``: the recorded channel sets with weights gathered ahead of time (only narrow convolutions left).

gate ms = deploy - fixed, gather ms = fixed - presliced, and the realization of ``presliced`` is the ceiling
that faster gates and gathers could reach with these convolution kernels.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..gates.deploy import DeployConv, DeployModel
from ..timing import interleaved_latency


@dataclass
class BreakdownRow:
    model: str
    target: float
    macs_ratio: float
    dense_ms: float
    deploy_ms: float
    fixed_ms: float  # gates skipped, gathers kept
    presliced_ms: float  # gates and gathers skipped
    gate_ms: float
    gather_ms: float
    realization: float
    ceiling_realization: float  # realization of the presliced executor


class FixedConv(nn.Module):
    """A ``DeployConv`` replaying one recorded decision: gathers each call, or uses weights gathered ahead."""

    def __init__(
        self, conv: DeployConv, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None, preslice: bool
    ) -> None:
        super().__init__()
        self.conv, self.in_idx, self.out_idx = conv, in_idx, out_idx
        weight, bias, self.groups = conv.gathered(in_idx, out_idx)
        self.presliced = (weight.contiguous(), bias.contiguous()) if preslice else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.presliced is not None:
            return self.conv.run(x, *self.presliced, self.groups)
        return self.conv.run(x, *self.conv.gathered(self.in_idx, self.out_idx))


@torch.no_grad()
def replay_executor(deploy: DeployModel, x: torch.Tensor, preslice: bool) -> DeployModel:
    """A copy of ``deploy`` that replays the channel sets it chooses for the single sample ``x``."""
    if x.shape[0] != 1:
        raise ValueError(f"the breakdown replays one sample's decisions; got a batch of {x.shape[0]}")
    deploy = copy.deepcopy(deploy)
    deploy.strategy = "gather"
    recorded = {}

    def record(module: DeployConv, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        in_idx = module.in_rt.idx if module.in_rt is not None else None
        out_idx = module.out_rt.idx if module.out_gate is not None else None
        recorded[module] = (in_idx, out_idx)

    convs = {path: m for path, m in deploy.model.named_modules() if isinstance(m, DeployConv)}
    handles = [m.register_forward_hook(record) for m in convs.values()]
    deploy(x)
    for handle in handles:
        handle.remove()
    for path, module in convs.items():
        parent, _, name = path.rpartition(".")
        owner = deploy.model.get_submodule(parent) if parent else deploy.model
        setattr(owner, name, FixedConv(module, *recorded[module], preslice=preslice))
    return deploy  # its runtimes keep this sample's channel sets for the linear consumers


def breakdown_row(
    name: str,
    target: float,
    macs_ratio: float,
    dense: nn.Module,
    deploy: DeployModel,
    x: torch.Tensor,
    threads: int,
    min_run_time: float,
    rounds: int = 5,
) -> BreakdownRow:
    fixed, presliced = replay_executor(deploy, x, False), replay_executor(deploy, x, True)
    with torch.no_grad():
        deploy.strategy = "gather"
        reference = deploy(x)
        for replay in (fixed, presliced):
            error = (replay(x) - reference).abs().max().item()
            if error > 1e-4:
                raise RuntimeError(f"replayed executor differs from deploy mode by {error:.2e}")
    executors = {"dense": dense, "deploy": deploy, "fixed": fixed, "presliced": presliced}
    t = interleaved_latency(executors, x, threads, min_run_time, rounds)
    deploy.strategy = "auto"
    theoretical = 1.0 / macs_ratio
    return BreakdownRow(
        name,
        target,
        macs_ratio,
        t["dense"],
        t["deploy"],
        t["fixed"],
        t["presliced"],
        t["deploy"] - t["fixed"],
        t["fixed"] - t["presliced"],
        t["dense"] / t["deploy"] / theoretical,
        t["dense"] / t["presliced"] / theoretical,
    )


def format_breakdown(rows: Sequence[BreakdownRow]) -> str:
    head = (
        f"{'model':<12}{'target':>7}{'MACs':>7}{'dense ms':>10}{'deploy ms':>11}{'gates ms':>10}{'gathers ms':>12}"
        f"{'narrow ms':>11}{'realiz.':>9}{'ceiling':>9}"
    )
    lines = [
        "batch-1 breakdown: gates = deploy - fixed decisions, gathers = fixed - presliced weights, "
        "narrow = presliced executor, ceiling = its realization",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r.model:<12}{r.target:>7.2f}{r.macs_ratio:>7.3f}{r.dense_ms:>10.3f}{r.deploy_ms:>11.3f}"
            f"{r.gate_ms:>10.3f}{r.gather_ms:>12.3f}{r.presliced_ms:>11.3f}{r.realization:>9.2f}"
            f"{r.ceiling_realization:>9.2f}"
        )
    return "\n".join(lines)
