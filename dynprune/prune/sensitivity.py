"""Sensitivity analysis: validation accuracy with one site pruned alone, at several ratios, no fine-tuning."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from torch import nn
from tqdm import tqdm

from ..data import DataSplits
from ..evaluation import evaluate
from ..loader import BatchLoader
from ..methods import Method
from .pruners import get_pruner


def site_sensitivity(
    model: nn.Module,
    method: str,
    data: DataSplits,
    ratios: Sequence[float],
    val_subset: int = 2000,
    batch_size: int = 512,
    progress: bool = True,
) -> tuple[float, dict[str, list[float]]]:
    """(dense val accuracy, {site: [val accuracy at each ratio]})."""
    pruner = get_pruner(method)
    if not pruner.structured:
        raise ValueError(f"sensitivity needs a per-site (structured) method, not {method!r}")
    val = data.val if val_subset <= 0 else data.val.take(slice(0, val_subset))
    loader = BatchLoader(val, data, batch_size, train=False)
    shape = (data.in_channels, data.image_size, data.image_size)
    dense_method = Method()
    model = model.eval()
    dense_method.prepare(model, shape)
    dense_acc = evaluate(model, loader, dense_method, None).top1
    sites = model.channel_sites()
    table: dict[str, list[float]] = {}
    bar = tqdm(total=len(sites) * len(ratios), desc="sensitivity", disable=not progress)
    for site in sites:
        table[site.name] = []
        for ratio in ratios:
            trial = copy.deepcopy(model)
            per_site = {s.name: (ratio if s.name == site.name else 0.0) for s in sites}
            pruner.apply(trial, sites, per_site, dense_method.cost)
            table[site.name].append(evaluate(trial, loader, dense_method, None).top1)
            bar.update()
    bar.close()
    return dense_acc, table


def format_sensitivity(dense_acc: float, ratios: Sequence[float], table: dict[str, list[float]]) -> str:
    head = f"{'site':<20}" + "".join(f"{r:>7.1f}" for r in ratios)
    lines = [f"val top1 of the unpruned model: {dense_acc:.2f}%", head, "-" * len(head)]
    lines += [f"{site:<20}" + "".join(f"{a:>7.2f}" for a in accs) for site, accs in table.items()]
    return "\n".join(lines)


def plot_sensitivity(
    dense_acc: float, ratios: Sequence[float], table: dict[str, list[float]], path: Path, title: str
) -> None:
    from ..plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("viridis", max(len(table), 2))
    for i, (site, accs) in enumerate(table.items()):
        ax.plot(ratios, accs, marker="o", markersize=3, color=cmap(i), label=site)
    ax.axhline(dense_acc, color="black", linestyle="--", label="unpruned")
    ax.set_xlabel("pruning ratio of the site (fraction of channels removed)")
    ax.set_ylabel("validation top-1 (%), no fine-tuning")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
