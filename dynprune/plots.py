"""Plots written next to results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def plot_gate_report(
    open_rates: Mapping[str, float], ratios: torch.Tensor, target: float | None, path: Path, title: str
) -> None:
    """Left: open rate per channel site (forward order). Right: histogram of per-sample MACs / dense."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    names = list(open_rates)
    left.bar(range(len(names)), [open_rates[n] for n in names], color="tab:blue")
    left.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    left.set_ylim(0, 1)
    left.set_ylabel("fraction of channels open")
    left.set_title("open rate per channel site (test set)")
    right.hist(ratios.numpy(), bins=40, color="tab:orange")
    mean = ratios.mean().item()
    right.axvline(mean, color="black", label=f"mean {mean:.3f}")
    if target is not None:
        right.axvline(target, color="tab:red", linestyle="--", label=f"target {target:.2f}")
    right.set_xlabel("MACs per sample / dense MACs")
    right.set_ylabel("test samples")
    right.set_title("per-sample compute")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
