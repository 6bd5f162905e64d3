"""The cascade's exit rule and its calibration, on tensors of confidences (no models here).

Members run from the cheapest up; an input stops at the first member whose confidence (its largest softmax
probability) reaches the threshold, and the last member answers whatever remains. One threshold for every stage:
an input's cost then grows with the threshold, so one number, found by bisection on the validation split, meets a
MAC target (BranchyNet's and the big/little cascades' rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from ..base import ConfigError


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """The largest softmax probability over the last dimension (classes), in float32: [B] for [B, classes]
    logits, [M, N] for every member's [M, N, classes]."""
    return torch.softmax(logits.float(), dim=-1).amax(dim=-1)


def exits(confidences: torch.Tensor, threshold: float) -> torch.Tensor:
    """[N] the member each input stops at: the first whose confidence ([M, N], members in run order) is at least
    ``threshold``; the last member for the rest."""
    decided = confidences >= threshold
    decided[-1] = True
    return decided.to(torch.uint8).argmax(dim=0)  # the first True of each column


def cumulative_macs(member_macs: Sequence[float]) -> torch.Tensor:
    """[M] what an input costs when it stops at each member: every member up to it has run."""
    return torch.tensor(member_macs, dtype=torch.float64).cumsum(0)


def sample_macs(confidences: torch.Tensor, member_macs: Sequence[float], threshold: float) -> torch.Tensor:
    """[N] each input's MACs (in the unit of ``member_macs``) under ``threshold``."""
    return cumulative_macs(member_macs)[exits(confidences, threshold)]


def calibrate(confidences: torch.Tensor, member_macs: Sequence[float], target: float) -> float:
    """The threshold with the largest mean cost over these inputs ([M, N] confidences) that is at most ``target``.

    Only thresholds at the inputs' own confidences change a decision, so the search runs over them (sorted, the
    mean cost nondecreasing along them); the threshold returned lies halfway to the next lower confidence, so a
    last-digit difference between runtimes or batch sizes does not flip the input it was calibrated on."""
    if len(member_macs) < 2:
        raise ConfigError("a cascade needs at least 2 members")
    if confidences.shape[1] == 0:
        raise ConfigError("the members' validation split is empty: a cascade is calibrated on it (--val-size > 0)")
    if any(b <= a for a, b in pairwise(member_macs)):
        raise ConfigError(f"the members must be given cheapest first; their MACs ratios are {list(member_macs)}")
    if member_macs[0] > target:
        raise ConfigError(
            f"--target-macs {target:g} is below the cheapest member alone ({member_macs[0]:.3f} of the dense "
            "MACs): add a cheaper member or raise the target"
        )
    if target >= sum(member_macs):
        raise ConfigError(
            f"--target-macs {target:g} lets every input run every member ({sum(member_macs):.3f} of the dense MACs "
            "together): the largest member alone is cheaper and as accurate; lower the target"
        )
    candidates = torch.unique(confidences[:-1].flatten())  # sorted; at the lowest, every input stops at member 0
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sample_macs(confidences, member_macs, float(candidates[mid])).mean() <= target:
            lo = mid
        else:
            hi = mid - 1
    below = float(candidates[lo - 1]) if lo > 0 else 0.0
    return (below + float(candidates[lo])) / 2  # the same decisions on these inputs, with a margin
