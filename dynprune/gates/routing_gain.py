"""What a network-scope router's choice per input is worth (``--gate width --width-scope network``).

The frozen-gate ablation (``dynamism.py``) compares the routed model with its nearest width, which runs at other
MACs. ``routing_gain`` holds the MACs: test top-1 as routed minus the mean test top-1 with the routed widths
shuffled over the test images (each width keeps its share of the inputs, so the same MACs), ``draws`` shuffles.
Zero when the router sends inputs to widths regardless of what they need; positive when the inputs it sends wide
are the ones that need it (BENCHMARKS.md, "Width gates at network scope").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .module import GateSet
from .routed import RoutedWidths

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def routed_correct(
    model: nn.Module, gate_set: GateSet, loader: Batches, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N] width index the router chose per image, [W, N] whether width w classifies image n right): one pass of
    the model as it is (its routing), and each width's static narrow model (``routed.py``'s branches: equal to the
    model at that width, at that width's cost) on every image."""
    was_training = model.training
    model.eval()
    branches = RoutedWidths(model).branches
    widths, correct = [], []
    try:
        for x, y in loader:
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)
                widths.append(gate_set.routed_widths.cpu())
                correct.append(torch.stack([branch(x).argmax(1).cpu() == y.cpu() for branch in branches]))
    finally:
        model.train(was_training)
    return torch.cat(widths), torch.cat(correct, dim=1)


def routing_gain(widths: torch.Tensor, correct: torch.Tensor, draws: int = 5, seed: int = 0) -> dict[str, Any]:
    """result.json's routing fields from ``routed_correct``'s output."""
    images = torch.arange(widths.numel())
    routed = 100.0 * correct[widths, images].double().mean().item()
    generator = torch.Generator().manual_seed(seed)
    shuffled = [
        100.0 * correct[widths[torch.randperm(widths.numel(), generator=generator)], images].double().mean().item()
        for _ in range(draws)
    ]
    chance = sum(shuffled) / draws
    return {
        "routed_top1": routed,
        "random_routing_top1": chance,
        "routing_gain": routed - chance,
        "width_shares": [(widths == w).double().mean().item() for w in range(correct.shape[0])],
        "width_alone_top1": [100.0 * c.double().mean().item() for c in correct],
    }
