"""How many validation inputs share one router logit in a network-scope width checkpoint (BENCHMARKS.md, "Width
gates at network scope"): inputs for which every hidden unit of the router's gate is off get the gate's bias alone,
so they are routed as one block and no logit shift can split them. Usage:
DYNPRUNE_DATA=... python docs/width_routed/router_ties.py CKPT"""

import sys

import torch

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.routed import RoutedWidths, width_index
from dynprune.loader import BatchLoader


def main(path: str) -> None:
    torch.set_num_threads(1)
    model, _, ckpt = rebuild_from_checkpoint(path)
    router = RoutedWidths(model).router
    data = data_of_checkpoint(ckpt)
    with torch.no_grad():
        logits = torch.cat([router.gate(router.prefix(b[0])) for b in BatchLoader(data.val, data, 500, train=False)])
    hidden = router.gate.fc1.out_features
    _, counts = logits.unique(dim=0, return_counts=True)
    widths = width_index(logits + router.shift).bincount(minlength=logits.shape[1] + 1).tolist()
    print(
        f"router hidden units {hidden}; {counts.numel()} distinct logit vectors for {len(logits)} validation "
        f"inputs; the largest tie holds {counts.max().item()} ({100 * counts.max().item() / len(logits):.0f}%); "
        f"inputs per width {widths}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
