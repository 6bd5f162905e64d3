"""Plots written next to results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, imported at the first plot: importing it costs every CLI process
    about half a second at start, plots or not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gate_report(
    open_rates: Mapping[str, float], ratios: torch.Tensor, target: float | None, path: Path, title: str
) -> None:
    """Left: open rate per channel site (forward order). Right: histogram of per-sample MACs / dense."""
    plt = pyplot()
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


def plot_class_open_rates(class_rates: Mapping[str, torch.Tensor], path: Path, title: str) -> None:
    """One heat map per site: class (rows) x channel group (columns) open rate on the test split, columns sorted
    by overall open rate; a map of uniform columns is a static site, varying rows are class-dependent gates."""
    plt = pyplot()
    sites = list(class_rates)
    cols = min(3, len(sites))
    rows = -(-len(sites) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False, layout="constrained")
    for ax, site in zip(axes.flat, sites, strict=False):
        rates = class_rates[site].float()  # [K, G]
        order = rates.mean(dim=0).argsort(descending=True)
        image = ax.imshow(rates[:, order].numpy(), aspect="auto", vmin=0, vmax=1, cmap="viridis")
        spread = rates.std(dim=0, unbiased=False).mean().item()
        ax.set_title(f"{site}  (class spread {spread:.3f})", fontsize=8)
        ax.set_ylabel("class", fontsize=7)
        ax.set_xlabel("channel (by open rate)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(sites) :]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="open rate")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
