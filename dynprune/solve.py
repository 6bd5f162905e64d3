"""The one root-finder for "solve a ratio, density or width for a MAC target": bisection on a monotone test.
(The budget calibration's search over a noisy, expensive curve is its own: ``gates/calibrate.py``.)"""

from __future__ import annotations

from collections.abc import Callable


def monotone_bracket(holds: Callable[[float], bool], lo: float, hi: float, steps: int) -> tuple[float, float]:
    """(a, b) with ``holds(a)`` true and ``holds(b)`` false, ``steps`` halvings from [lo, hi]; ``holds`` is
    true up to some point and false after it, and the caller has checked (or assumes) holds(lo) and not holds(hi).
    a is the largest value found where it holds, b the smallest where it does not."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo, hi
