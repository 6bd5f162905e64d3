"""What a better router could buy a network-scope width checkpoint (BENCHMARKS.md, "Width gates: a label at the
budget"): test top-1 as routed; each width alone; the share of test images some width classifies right (no
router can beat it); and a router that knows each width's own confidence, at the routed number of images per
width: the images the narrowest width is most confident on run narrowest, then the next width's most confident,
and so on (a strong router: it runs every width to decide). Usage: DYNPRUNE_DATA=... python routing_bounds.py CKPT..."""

import sys

import torch

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.routed import RoutedWidths
from dynprune.loader import BatchLoader


def confidence_routing(logits: list[torch.Tensor], counts: list[int]) -> torch.Tensor:
    """[N] width per image: each width in turn takes its ``counts[w]`` most confident of the images left."""
    n = logits[0].shape[0]
    width = torch.full((n,), len(logits) - 1)
    left = torch.arange(n)
    for w, count in enumerate(counts[:-1]):
        confidence = torch.softmax(logits[w][left], dim=1).max(dim=1).values
        taken = left[confidence.argsort(descending=True)[:count]]
        width[taken] = w
        left = left[~torch.isin(left, taken)]
    return width


def main(path: str) -> None:
    model, _, ckpt = rebuild_from_checkpoint(path)
    routed = RoutedWidths(model)
    data = data_of_checkpoint(ckpt)
    batches = list(BatchLoader(data.test, data, 500, train=False))
    labels = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        widths = torch.cat([routed.route(b[0]) for b in batches])
        logits = [torch.cat([branch(b[0]) for b in batches]) for branch in routed.branches]
    correct = torch.stack([v.argmax(1) == labels for v in logits])  # [W, N]
    images = torch.arange(len(labels))
    counts = [int((widths == w).sum()) for w in range(len(logits))]

    def top1(width: torch.Tensor) -> float:
        return 100.0 * correct[width, images].float().mean().item()

    alone = [round(100.0 * c.float().mean().item(), 2) for c in correct]
    print(
        f"{path}: routed {top1(widths):.2f} (images per width {counts}); each width alone {alone}; "
        f"some width right {100.0 * correct.any(0).float().mean().item():.2f}; "
        f"confidence routing at the same counts {top1(confidence_routing(logits, counts)):.2f}"
    )


if __name__ == "__main__":
    for checkpoint in sys.argv[1:]:
        main(checkpoint)
