"""How dynamic the gates really are: the distinct channel sets each site opened over an evaluation pass.

Gates that open the same channels for every input are static pruning with extra cost: the count of distinct sets
says which is which (BENCHMARKS.md, "Are the gates dynamic?", where gates started on l1-filter's channels opened
one set per site for every test image)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import torch


class ChannelSetCounter:
    """Counts, per site, how many inputs opened each distinct channel set (a set is the packed bits of a mask)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[bytes]] = {}

    def reset(self) -> None:
        self.counts = {}

    def add(self, masks: Mapping[str, torch.Tensor]) -> None:
        """One batch of decisions: site -> [B, C] 0/1 mask."""
        for site, mask in masks.items():
            packed = np.packbits(mask.detach().bool().cpu().numpy(), axis=1)  # [B, ceil(C / 8)] uint8
            self.counts.setdefault(site, Counter()).update(row.tobytes() for row in packed)

    def summary(self) -> dict[str, dict[str, float]]:
        """site -> {distinct: sets seen, top_share: the share of inputs that opened the most common set}."""
        out = {}
        for site, counter in self.counts.items():
            total = sum(counter.values())
            out[site] = {"distinct": len(counter), "top_share": counter.most_common(1)[0][1] / total if total else 0.0}
        return out
