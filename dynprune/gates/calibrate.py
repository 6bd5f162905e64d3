"""Budget calibration: one scalar added to every gate logit, found by a bracketing root search, to hit a MAC target.

The MAC ratio of eval-mode (thresholded) decisions grows monotonically with the shift. Each evaluation is a full
pass over the validation split, so the search is built to need few: the search works on the logit of the ratio, where
a sigmoid-like ratio curve is nearly a line; the bracket grows from +-0.5 along the secant (trained gates need
shifts of order 1, not the +-20 a plain bisection starts from), then the Illinois variant of regula falsi closes
it, falling back to bisection where an interpolation would leave the bracket (a third fewer passes than the
plain bisection on the curves of tests/test_calibrate.py: BENCHMARKS.md, "Budget calibration cost"). After
training, ``two_stage_shift`` runs the coarse part of the search on the first eval batches only, so the full
validation split is evaluated only a few times. Used after training on the validation split (closing the gap
between stochastic training decisions and deterministic eval decisions) and by the speed
benchmark to give random gates a chosen open rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


def _logit(ratio: float) -> float:
    p = min(max(ratio, 1e-4), 1 - 1e-4)  # a ratio can sit a little above 1 (the gates' own MACs)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class ShiftSearch:
    """The search's outcome: the shift, the ratio it gives, and how many passes it cost."""

    shift: float
    ratio: float
    passes: int


class _ShiftProbe:
    """The evaluations of ``ratio_at`` in a shift search: counted, the closest ratio kept, the miss given in
    logit space (where a sigmoid-like ratio curve is nearly a line: same sign as ratio - target, so brackets are
    unchanged, but the interpolation lands close even in the curve's flat tails)."""

    def __init__(self, ratio_at: Callable[[float], float], target: float, tolerance: float, max_passes: int) -> None:
        self.ratio_at, self.target, self.tolerance, self.max_passes = ratio_at, target, tolerance, max_passes
        self.passes = 0
        self.best = (0.0, math.inf)

    def gap(self, shift: float) -> float:
        self.passes += 1
        ratio = self.ratio_at(shift)
        if abs(ratio - self.target) < abs(self.best[1] - self.target):
            self.best = (shift, ratio)
        return _logit(ratio) - _logit(self.target)

    def done(self) -> bool:
        return abs(self.best[1] - self.target) <= self.tolerance or self.passes >= self.max_passes

    def result(self) -> ShiftSearch:
        return ShiftSearch(*self.best, self.passes)


def find_logit_shift(
    ratio_at: Callable[[float], float],
    target: float,
    tolerance: float = 0.005,
    bound: float = 20.0,
    max_passes: int = 24,
    start: float = 0.0,
    first_step: float = 0.5,
) -> ShiftSearch:
    """The shift with |ratio - target| <= tolerance when reachable within +-``bound``, else the closest found;
    the search starts at ``start`` and first looks ``first_step`` away (a coarse search's answer and a small
    step refine it in few passes)."""
    probe = _ShiftProbe(ratio_at, target, tolerance, max_passes)
    a, fa = start, probe.gap(start)
    if probe.done():
        return probe.result()
    b = start - first_step if fa > 0 else start + first_step  # too many MACs: shift the logits down
    fb = probe.gap(b)
    while not probe.done() and (fb > 0) == (fa > 0):  # grow the bracket until the ratio crosses the target
        if abs(b) >= bound:  # unreachable within the bound: the closest shift found
            return probe.result()
        step = b - a
        # the secant's crossing, aimed 20% past it so the next point brackets the root; 1.5x-4x the last step
        reach = 1.2 * fb / (fa - fb) if fa != fb else 2.0
        c = b + step * min(max(reach, 1.5), 4.0)
        a, fa = b, fb
        b = max(-bound, min(bound, c))
        fb = probe.gap(b)
    while not probe.done():  # Illinois: fa and fb have opposite signs
        c = (a * fb - b * fa) / (fb - fa) if fb != fa else (a + b) / 2
        if not min(a, b) < c < max(a, b):
            c = (a + b) / 2
        fc = probe.gap(c)
        if (fc > 0) != (fb > 0):
            a, fa = b, fb
        else:
            fa /= 2  # the retained end is halved so it cannot stall the interpolation
        b, fb = c, fc
        if abs(b - a) < 1e-6:
            break
    return probe.result()


class FirstBatches:
    """The first ``count`` batches of an evaluation loader: a fixed subset (eval batches come in a fixed order)
    for the coarse first stage of a calibration."""

    def __init__(self, loader: Any, count: int) -> None:
        self.loader, self.count, self.device = loader, count, loader.device

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.count)


def two_stage_shift(
    ratio_on: Callable[[Any, float], float], loader: Any, target: float, tolerance: float, subset_batches: int = 2
) -> tuple[ShiftSearch, int]:
    """(the search on the whole loader, passes over the subset): a coarse search on the first batches, at twice
    the tolerance, then a refinement on every batch from its answer (a loader of at most ``subset_batches``
    batches is searched whole at once). ``ratio_on`` is expected to remember what it measured on the whole
    loader (the caller also asks for the unshifted ratio)."""

    def full(shift: float) -> float:
        return ratio_on(loader, shift)

    if len(loader) <= subset_batches:
        return find_logit_shift(full, target, tolerance), 0
    coarse = find_logit_shift(
        lambda shift: ratio_on(FirstBatches(loader, subset_batches), shift), target, 2 * tolerance
    )
    return find_logit_shift(full, target, tolerance, start=coarse.shift, first_step=0.25), coarse.passes
