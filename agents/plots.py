"""The search's two pictures: per-site ratios of the best strategies, and best reward vs episode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynprune.plots import pyplot


def plot_ratios(best: Mapping[str, Mapping[str, float]], path: Path, title: str) -> None:
    """Grouped bars: one group per site, one bar per algorithm's best strategy."""
    names = list(best)
    sites = list(next(iter(best.values())))
    x = np.arange(len(sites))
    width = 0.8 / max(len(names), 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(sites) + 2), 4))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, [best[name][s] for s in sites], width, label=name)
    ax.set_xticks(x, sites, rotation=70, fontsize=7)
    ax.set_ylabel("pruning ratio (fraction of channels removed)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_best_reward(histories: Mapping[str, Sequence[dict[str, Any]]], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    longest = max((len(h) for h in histories.values()), default=1)
    for name, history in histories.items():
        if not history:
            continue
        if len(history) == 1:  # a one-episode baseline (uniform): a level line across the plot
            ax.axhline(history[0]["reward"], linestyle="--", color="gray", label=name)
            continue
        episodes = [row["episode"] for row in history]
        ax.plot(episodes, [row["best_reward"] for row in history], label=f"{name} (best so far)")
        ax.scatter(episodes, [row["reward"] for row in history], s=4, alpha=0.3)
    ax.set_xlim(0, longest + 1)
    ax.set_xlabel("episode")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
