"""The dynamic gain per stage: test top-1 of a gated checkpoint as saved, minus test top-1 with only one stage's
sites frozen to the channels each opened most often on the validation split (the frozen-gate ablation of
result.json, one stage at a time; the other stages still decide per input). Usage:
DYNPRUNE_DATA=<data> python docs/gate_usage/stage_gain.py RUN/checkpoint.pt"""

import sys

import torch

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.gates.dynamism import count_open, frozen_sets
from dynprune.loader import BatchLoader

torch.set_num_threads(1)
model, method, ckpt = rebuild_from_checkpoint(sys.argv[1])
model.eval()
gates = model.gate_set
splits = data_of_checkpoint(ckpt)


def top1(split) -> float:
    loader = BatchLoader(split, splits, 512, train=False)
    return count_open(model, gates, loader, splits.num_classes, lambda masks: torch.zeros(1)).top1


val = count_open(
    model, gates, BatchLoader(splits.val, splits, 512, train=False), splits.num_classes, lambda m: torch.zeros(1)
)
frozen = frozen_sets(val.open_rates())
dynamic = top1(splits.test)
row = [f"as saved {dynamic:.2f}"]
stages = sorted({site.split(".")[0] for site in frozen})
for stage in [*stages, "all"]:
    gates.fixed_decisions = {s: f for s, f in frozen.items() if stage == "all" or s.startswith(stage + ".")}
    ablated = top1(splits.test)
    row.append(f"{stage} frozen {ablated:.2f} (gain {dynamic - ablated:+.2f})")
gates.fixed_decisions = {}
print("; ".join(row))
