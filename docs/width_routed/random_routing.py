"""Routing gain of a network-scope width checkpoint (BENCHMARKS.md, "Width gates at network scope"): test top-1
as routed, against the same model with the routed widths shuffled over the test images (the same share of each
width, so the same MACs), 5 shuffles. Usage: DYNPRUNE_DATA=... python docs/width_routed/random_routing.py CKPT"""

import sys

import torch

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.routed import RoutedWidths
from dynprune.loader import BatchLoader


def top1(logits: dict[int, torch.Tensor], widths: torch.Tensor, labels: torch.Tensor) -> float:
    hits = sum((logits[w][widths == w].argmax(1) == labels[widths == w]).sum().item() for w in widths.unique().tolist())
    return 100.0 * hits / len(labels)


def main(path: str) -> None:
    model, _, ckpt = rebuild_from_checkpoint(path)
    routed = RoutedWidths(model)
    data = data_of_checkpoint(ckpt)
    batches = list(BatchLoader(data.test, data, 500, train=False))
    labels = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        widths = torch.cat([routed.route(b[0]) for b in batches])
        logits = {w: torch.cat([branch(b[0]) for b in batches]) for w, branch in enumerate(routed.branches)}
    shares = {w: round((widths == w).float().mean().item(), 4) for w in widths.unique().tolist()}
    alone = {w: round(100.0 * (v.argmax(1) == labels).float().mean().item(), 2) for w, v in logits.items()}
    generator = torch.Generator().manual_seed(0)
    shuffled = [top1(logits, widths[torch.randperm(len(widths), generator=generator)], labels) for _ in range(5)]
    routed_top1, mean = top1(logits, widths, labels), sum(shuffled) / len(shuffled)
    print(f"routed top-1 {routed_top1:.2f}; width shares {shares}; each width for every image {alone}")
    std = torch.tensor(shuffled).std().item()
    print(f"random routing (same shares, 5 draws): {mean:.2f} +- {std:.2f}; routing gain {routed_top1 - mean:+.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
