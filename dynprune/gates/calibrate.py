"""Budget calibration: one scalar added to every gate logit, found by bisection, to hit a MAC target.

The MAC ratio of eval-mode (thresholded) decisions grows monotonically with the shift, so bisection converges.
Used after training on the validation split (closing the gap between stochastic training decisions and
deterministic eval decisions) and by the speed benchmark to give random gates a chosen open rate.
"""

from __future__ import annotations

from collections.abc import Callable


def bisect_logit_shift(
    ratio_at: Callable[[float], float],
    target: float,
    tolerance: float = 0.005,
    bound: float = 20.0,
    steps: int = 24,
) -> tuple[float, float]:
    """(shift, ratio) with |ratio - target| <= tolerance when reachable, else the closest shift found."""
    ratio = ratio_at(0.0)
    best = (0.0, ratio)
    if abs(ratio - target) <= tolerance:
        return best
    lo, hi = (-bound, 0.0) if ratio > target else (0.0, bound)
    for _ in range(steps):
        shift = (lo + hi) / 2
        ratio = ratio_at(shift)
        if abs(ratio - target) < abs(best[1] - target):
            best = (shift, ratio)
        if abs(ratio - target) <= tolerance:
            break
        lo, hi = (lo, shift) if ratio > target else (shift, hi)
    return best
