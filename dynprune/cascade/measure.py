"""What a calibrated cascade scores: its figures on a split beside two input-blind baselines from the same members
(random exits at its exit shares, a static mix at its MACs), and the accuracy-MACs curve as the threshold moves
(a plot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits
from ..formats import Arrays
from ..loader import BatchLoader
from ..plots import pyplot
from .model import Cascade
from .rule import confidence, cumulative_macs, exits, sample_macs

BATCH = 500


@torch.no_grad()
def member_logits(members: Sequence[nn.Module], arrays: Arrays, data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """([M, N, classes] every member's logits on every image, [N] labels): what the baselines and curve need."""
    outs: list[list[torch.Tensor]] = [[] for _ in members]
    labels = []
    for x, y in BatchLoader(arrays, data, BATCH, train=False):
        for out, member in zip(outs, members, strict=True):
            out.append(member(x).float())
        labels.append(y)
    return torch.stack([torch.cat(o) for o in outs]), torch.cat(labels)


@torch.no_grad()
def run_cascade(cascade: Cascade, arrays: Arrays, data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, classes] the cascade's logits as its own forward computes them, [N] the member each input stopped at)."""
    logits, stopped = [], []
    for x, _ in BatchLoader(arrays, data, BATCH, train=False):
        out, where = cascade.route(x)
        logits.append(out.float())
        stopped.append(where)
    return torch.cat(logits), torch.cat(stopped)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(-1) == labels).double().mean().item()


def split_figures(
    logits: torch.Tensor, stopped: torch.Tensor, labels: torch.Tensor, every: torch.Tensor, macs: Sequence[float]
) -> dict[str, Any]:
    """One split's figures: the cascade's top-1 and MACs (per input: every member it ran), each member alone, and
    two input-blind baselines from the same members: the same exit shares drawn at random (the same MACs: what
    the confidence rule carries) and a static mix at the same mean MACs (a random share of the inputs run the
    largest member alone, the rest the cheapest alone: the best a router blind to the input can do with them)."""
    per_input = cumulative_macs(macs)[stopped]
    mean_macs = per_input.mean().item()
    shares = torch.bincount(stopped, minlength=len(macs)).double() / len(stopped)
    alone = [top1(every[i], labels) for i in range(len(macs))]
    random_exit = float(sum(s * a for s, a in zip(shares.tolist(), alone, strict=True)))
    large = min(1.0, max(0.0, (mean_macs - macs[0]) / (macs[-1] - macs[0])))
    static_mix = (1 - large) * alone[0] + large * alone[-1]
    q = torch.quantile(per_input, torch.tensor([0.1, 0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    acc = top1(logits, labels)
    return {
        "top1": acc,
        "macs_ratio": mean_macs,
        "macs_ratio_p10_p50_p90_p99": q,
        "exit_shares": shares.tolist(),
        "member_top1": alone,
        "random_exit_top1": random_exit,
        "routing_gain": acc - random_exit,
        "static_mix_top1": static_mix,
        "static_mix_large_share": large,
        "gain_over_static_mix": acc - static_mix,
    }


def curve(
    every: torch.Tensor, labels: torch.Tensor, macs: Sequence[float], points: int = 41
) -> list[tuple[float, float, float]]:
    """(threshold, mean MACs, top-1) as the threshold sweeps the confidences' quantiles."""
    conf = confidence(every)
    picks = torch.quantile(conf[:-1].flatten().double(), torch.linspace(0, 1, points, dtype=torch.float64))
    rows = []
    for t in [*picks.tolist(), 1.0 + 1e-6]:
        stopped = exits(conf, t)
        logits = every[stopped, torch.arange(every.shape[1])]
        rows.append((t, sample_macs(conf, macs, t).mean().item(), top1(logits, labels)))
    return rows


def plot_curve(
    rows: list[tuple[float, float, float]], macs: Sequence[float], alone: Sequence[float], chosen: dict, path: Path
) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r[1] for r in rows], [r[2] for r in rows], "-", label="cascade, threshold swept (test)")
    ax.scatter(macs, alone, marker="s", color="k", label="each member alone", zorder=3)
    ax.scatter([chosen["macs_ratio"]], [chosen["top1"]], color="C3", label="calibrated on validation", zorder=4)
    ax.set_xlabel("mean MACs / dense")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
