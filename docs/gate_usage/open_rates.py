"""Per-channel open rates of a gated checkpoint on the test split, per site: how many channels are open for more
than half of the images, for at least 99 % of them, and inside the conditional band (1-99 %), and the five highest
rates. Usage: DYNPRUNE_DATA=<data> python docs/gate_usage/open_rates.py RUN/checkpoint.pt"""

import sys

import torch

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.dynamism import count_open
from dynprune.loader import BatchLoader

torch.set_num_threads(1)
model, method, ckpt = rebuild_from_checkpoint(sys.argv[1])
splits = data_of_checkpoint(ckpt)
loader = BatchLoader(splits.test, splits, 512, train=False)
counts = count_open(model.eval(), model.gate_set, loader, splits.num_classes, lambda masks: torch.zeros(1))
images = counts.class_sizes.sum()
for site, per_class in counts.per_class.items():
    rates = per_class.sum(dim=0).float() / images
    band = int(((rates > 0.01) & (rates < 0.99)).sum())
    top = [round(r, 3) for r in rates.sort(descending=True).values[:5].tolist()]
    print(
        f"{site}: >50% {int((rates > 0.5).sum())}, >=99% {int((rates >= 0.99).sum())}, "
        f"conditional {band} of {rates.numel()}, highest {top}"
    )
