"""After training: the gates' eval-mode (thresholded) decisions moved onto the MAC target on the validation split.

Training decisions are stochastic (gumbel) or soft while eval thresholds at logit 0, so the eval MACs can sit off
the training-time budget. A global budget gets one scalar logit shift (``two_stage_shift``: MACs grow monotonically
with it); per-site densities get one shift per site (``quantile_shifts``). Either is folded into the gate biases,
so the saved model runs the calibrated decisions with the threshold left at 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from ..evaluation import evaluate
from .calibrate import two_stage_shift
from .init import quantile_shifts
from .module import GateSet


class GatedMethod(Protocol):
    """What calibration needs of the gated method (``gates.method.GatedMethod``, which calls it with itself)."""

    gate_set: GateSet
    target: float
    dense_macs: float
    densities: dict[str, float]
    calibration_tolerance: float

    def start_eval(self) -> None: ...

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor: ...

    def open_rates(self) -> dict[str, float]: ...

    def collect_logits(self, sites: Iterable[str]) -> None: ...

    def collected_logits(self) -> dict[str, torch.Tensor]: ...


def calibrate_global(
    method: GatedMethod, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None
) -> dict[str, Any]:
    """One logit shift for every gate so that the mean eval MACs on ``val_loader`` meet the method's target."""
    gate_set = method.gate_set
    full_split: dict[float, tuple[float, float]] = {}  # shift -> (ratio, top-1) on the whole split: each once

    def ratio_on(loader: Any, shift: float) -> float:
        if loader is val_loader and shift in full_split:
            return full_split[shift][0]
        gate_set.logit_shift = shift
        result = evaluate(model, loader, method, amp_dtype)
        ratio = result.macs.mean().item() / method.dense_macs
        if loader is val_loader:
            full_split[shift] = (ratio, result.top1)
        return ratio

    started = time.perf_counter()
    before = ratio_on(val_loader, 0.0)
    found, subset_passes = two_stage_shift(ratio_on, val_loader, method.target, method.calibration_tolerance)
    ratio_on(val_loader, found.shift)  # measured already, as a rule (the search ends on the whole split)
    seconds = time.perf_counter() - started
    gate_set.logit_shift = found.shift
    gate_set.fold_logit_shift()
    print(
        f"budget calibration: {len(full_split)} validation passes (+ {subset_passes} on a subset), "
        f"{seconds:.1f} s, val MACs {before:.3f}x -> {found.ratio:.3f}x dense",
        flush=True,
    )
    top1 = (full_split[0.0][1], full_split[found.shift][1])
    warn_if_costly(top1, f"val MACs {before:.3f}x for a target of {method.target}")
    target_met = abs(found.ratio - method.target) <= method.calibration_tolerance
    if not target_met:
        warn_off_target(found.ratio, method.target)
    return {
        "target_met": target_met,
        "val_macs_ratio_before": before,
        "val_macs_ratio_after": found.ratio,
        "val_top1_before": top1[0],
        "val_top1_after": top1[1],
        "logit_shift": found.shift,
        "val_passes": len(full_split),
        "subset_passes": subset_passes,
        "seconds": round(seconds, 1),
    }


#: validation top-1 points a calibration may cost before it is called out
COSTLY_CALIBRATION = 5.0


def warn_if_costly(top1: tuple[float, float], where_training_ended: str) -> None:
    """One line when moving the decisions onto the budget after training cost much accuracy: the training did
    not reach its budget, and the run's figures describe gates it never trained with."""
    lost = top1[0] - top1[1]
    if lost > COSTLY_CALIBRATION:
        print(
            f"warning: the budget calibration cost {lost:.1f} points of validation top-1 ({top1[0]:.2f} -> "
            f"{top1[1]:.2f}): training ended off its budget ({where_training_ended}); raise --budget-weight or "
            "train longer",
            flush=True,
        )


def warn_off_target(ratio: float, target: float) -> None:
    """One line when no shift puts the eval MACs on the target: the ratio jumps over it as the shift moves, because
    a block of inputs share one logit (a gate whose hidden ReLUs are all off for them outputs its bias alone), and
    one shift moves the whole block. The run's MACs are then the closest the search found."""
    side = "above" if ratio > target else "below"
    print(
        f"warning: the budget calibration could not reach the target: val MACs {ratio:.3f}x, {side} the target "
        f"{target}; usually many inputs share one gate logit (the gate's hidden units are off for them), so one "
        "shift moves them all at once; a wider gate MLP (--gate-reduction) gives each input its own logit",
        flush=True,
    )


def calibrate_per_site(
    method: GatedMethod, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None
) -> dict[str, Any]:
    """Each site's logits shifted so that its eval open rate on ``val_loader`` is its density (a quantile per
    site, repeated a few passes; ``quantile_shifts``)."""
    gate_set = method.gate_set
    passes = 2  # the "before" pass and the "after" pass around the search

    def logits_at(shifts: dict[str, float]) -> dict[str, torch.Tensor]:
        nonlocal passes
        passes += 1
        gate_set.site_shifts = dict(shifts)
        method.collect_logits(method.densities)
        evaluate(model, val_loader, method, amp_dtype)
        return method.collected_logits()

    started = time.perf_counter()
    top1_before = evaluate(model, val_loader, method, amp_dtype).top1
    before = method.open_rates()
    shifts = quantile_shifts(logits_at, method.densities)
    gate_set.site_shifts = shifts
    gate_set.fold_logit_shift()
    top1_after = evaluate(model, val_loader, method, amp_dtype).top1
    seconds = time.perf_counter() - started
    print(f"budget calibration: per site, {passes} validation passes, {seconds:.1f} s", flush=True)
    off = max(before, key=lambda site: before[site] - method.densities[site])
    warn_if_costly(
        (top1_before, top1_after), f"{off} open {before[off]:.2f} for a density of {method.densities[off]:.2f}"
    )
    return {
        "val_top1_before": top1_before,
        "val_top1_after": top1_after,
        "val_open_rates_before": before,
        "val_open_rates_after": method.open_rates(),
        "site_shifts": shifts,
        "val_passes": passes,
        "seconds": round(seconds, 1),
    }
