"""The budget by construction ("action wall", AMC), in channel counts so rounding cannot break it.

Sites are decided in order. Before site t is decided, its kept channel count n is clipped so that
- the MAC target stays reachable if every later site takes ``r_max`` (upper wall: MACs <= target), and
- the target is not undershot if every later site takes ``r_min`` (lower wall: MACs >= target).
The upper wall wins when the two disagree (only possible through channel rounding), so every finished episode
ends at or just under the target: AMC's single wall lets random or badly explored strategies waste budget, and
then strategies are not compared at the same cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dynprune.base import check_target_macs
from dynprune.cost import CostModel
from dynprune.prune.ratios import removed
from dynprune.solve import monotone_bracket

from .evaluate import SearchError


class BudgetWall:
    def __init__(self, cost: CostModel, order: Sequence[str], target: float, r_min: float, r_max: float) -> None:
        if not 0 <= r_min < r_max < 1:
            raise SearchError(f"need 0 <= --r-min < --r-max < 1, got r_min={r_min}, r_max={r_max}")
        check_target_macs(target)
        self.cost, self.order = cost, list(order)
        self.widths = [cost.site_widths[s] for s in self.order]
        self.target_macs = target * cost.dense_macs
        self.r_min, self.r_max = r_min, r_max
        floor = self._macs({}, 0, at=r_max) / cost.dense_macs
        if floor > target + 1e-9:
            raise SearchError(
                f"--target-macs {target} is out of reach: with every site at --r-max {r_max} the model still costs "
                f"{floor:.3f} of dense; raise --target-macs to >= {floor:.3f} or raise --r-max"
            )

    def kept(self, width: int, ratio: float) -> int:
        return width - removed(width, ratio)

    def _macs(self, decided: Mapping[str, float], start: int, at: float) -> float:
        """MACs with ``decided`` keep fractions and every site from ``start`` on at ratio ``at``."""
        keep = dict(decided)
        for name, width in zip(self.order[start:], self.widths[start:], strict=True):
            keep[name] = self.kept(width, at) / width
        return float(self.cost.macs(keep))

    def bounds(self, decided: Mapping[str, float], t: int) -> tuple[int, int]:
        """(fewest, most) channels site ``t`` may keep, given the keep fractions ``decided`` before it."""
        name, width = self.order[t], self.widths[t]
        lo, hi = self.kept(width, self.r_max), self.kept(width, self.r_min)

        def line(at: float) -> tuple[float, float]:  # MACs are linear in this site's kept fraction
            zero = self._macs({**decided, name: 0.0}, t + 1, at)
            one = self._macs({**decided, name: 1.0}, t + 1, at)
            return zero, one - zero

        base, slope = line(self.r_max)  # upper wall
        if slope > 0:
            hi = min(hi, math.floor((self.target_macs - base) / slope * width + 1e-9))
        base, slope = line(self.r_min)  # lower wall
        if slope > 0:
            lo = max(lo, math.ceil((self.target_macs - base) / slope * width - 1e-9))
        hi = max(hi, 1)
        return min(lo, hi), hi

    def track(self, decided: Mapping[str, float], t: int) -> float:
        """The smallest ratio that, taken by site ``t`` and every later site, keeps the MACs at or under the target
        (the ``centred`` actions' zero): the uniform ratio of the sites still to decide."""

        def too_costly(ratio: float) -> bool:
            return self._macs(decided, t, at=ratio) > self.target_macs

        if not too_costly(self.r_min):
            return self.r_min
        if too_costly(self.r_max):
            return self.r_max
        return monotone_bracket(too_costly, self.r_min, self.r_max, 20)[1]

    def clip(self, decided: Mapping[str, float], t: int, ratio: float) -> float:
        """The ratio actually applied at site ``t``: the wanted one moved inside the walls."""
        width = self.widths[t]
        lo, hi = self.bounds(decided, t)
        n = min(max(self.kept(width, ratio), lo), hi)
        return (width - n) / width
