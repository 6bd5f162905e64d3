"""Per-width BN statistics for a network-scope width checkpoint (BENCHMARKS.md, "Width gates at network scope"):
each width's narrow model (gates removed, sites sliced, BN not folded) gets its BN running statistics recomputed
on 10,000 training images (all of them, or only those routed to that width), then the routed model is scored on
the validation and test splits. Usage: DYNPRUNE_DATA=... python docs/width_routed/bn_per_width.py CKPT"""

import copy
import sys

import torch
from torch import nn

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.routed import RoutedWidths, narrow_unfolded
from dynprune.loader import BatchLoader


@torch.no_grad()
def recalibrate(net: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch
            m.train()
    for x in batches:
        if len(x):
            net(x)
    return net.eval()


@torch.no_grad()
def routed_top1(routed: RoutedWidths, branches: list[nn.Module], batches: list) -> float:
    hits = n = 0
    for x, y in batches:
        widths = routed.route(x)
        for w in widths.unique().tolist():
            sel = widths == w
            hits += (branches[w](x[sel]).argmax(1) == y[sel]).sum().item()
        n += len(y)
    return 100.0 * hits / n


def main(path: str) -> None:
    torch.set_num_threads(1)
    model, _, ckpt = rebuild_from_checkpoint(path)
    routed = RoutedWidths(model)
    data = data_of_checkpoint(ckpt)
    val = list(BatchLoader(data.val, data, 500, train=False))
    test = list(BatchLoader(data.test, data, 500, train=False))
    train = [b[0] for b in BatchLoader(data.train, data, 250, train=False)][:40]
    plain = [narrow_unfolded(model, w) for w in range(len(routed.branches))]
    routes = [routed.route(x) for x in train]
    variants = {
        "as saved (shared statistics)": list(routed.branches),
        "per-width statistics, all training images": [recalibrate(p, train) for p in plain],
        "per-width statistics, the images routed there": [
            recalibrate(p, [x[r == w] for x, r in zip(train, routes, strict=True)]) for w, p in enumerate(plain)
        ],
    }
    for name, branches in variants.items():
        print(f"{name}: val {routed_top1(routed, branches, val):.2f} test {routed_top1(routed, branches, test):.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
