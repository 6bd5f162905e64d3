"""Per-site densities (open fractions) and how the gates are held to them.

``--gate-density``: ``global`` holds the mean per-sample MACs to ``--target-macs`` (the sites share the budget as
training finds best); ``uniform`` holds every site to the one density, the same at every site, whose MACs meet
the target; ``FILE.json`` holds each site to its own density, read in the ``--ratios`` format (density = the
kept fraction of the pruning ratio), so an RL agent's ``policy.json`` sets how much each site keeps and the gates
choose which channels per input. Fixed-count estimators (topk) keep exactly these densities; with ``global``
they use ``uniform``'s.

The target slides from 1 to its final value over the first ``--budget-warmup-epochs`` (``linear``, or
``cosine`` as ManiDP anneals its remain rate), and ``--density-bound-decay`` adds DGNet's tightening bounds: each
site's open rate is pushed into [d (1 - p), d + (1 - d) p] with p = exp(-decay x epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from ..base import ConfigError
from ..cost import CostModel
from ..prune.ratios import from_file, removed
from ..solve import monotone_bracket

GLOBAL, UNIFORM = "global", "uniform"


#: a MAC target must stand this far above the gated floor: closer, the gates have no channels left to choose
FLOOR_MARGIN = 0.01


def gated_floor(cost: CostModel, sites: Iterable[str], dense_macs: float) -> float:
    """MACs / dense with every gate closed: what the gates' own layers and the layers outside channel sites cost."""
    return float(cost.macs(dict.fromkeys(sites, 0.0))) / dense_macs


def check_above_gated_floor(target: float, floor: float, who: str) -> None:
    if target <= floor + FLOOR_MARGIN:
        raise ConfigError(
            f"{who} {target} is below what gates can reach: with every gate closed the model still costs "
            f"{floor:.3f} of dense (gates and layers outside channel sites); choose > {floor + FLOOR_MARGIN:.2f}"
        )


def kept_groups(groups: int, density: float) -> int:
    """Channel groups a site of ``groups`` keeps at ``density``: rounded, at least one, at most all."""
    return min(groups, max(1, round(density * groups)))


def uniform_density(cost: CostModel, target: float, dense_macs: float, groups: dict[str, int]) -> dict[str, float]:
    """The largest density, the same at every site, whose MACs (gates included, k = round(density x groups)
    groups kept per site) stay <= target x dense MACs (bisection: MACs grow with the density)."""

    def fractions(density: float) -> dict[str, float]:
        return {s: kept_groups(g, density) / g for s, g in groups.items()}

    def ratio(density: float) -> float:
        return float(cost.macs(fractions(density))) / dense_macs

    if ratio(0.0) > target:
        raise ConfigError(
            f"--target-macs {target} cannot be met with one channel group kept per site ({ratio(0.0):.3f} of dense)"
        )
    if ratio(1.0) <= target:
        return fractions(1.0)
    density, _ = monotone_bracket(lambda d: ratio(d) <= target, 0.0, 1.0, 30)
    return fractions(density)


def site_densities(
    mode: str, cost: CostModel, target: float, dense_macs: float, groups: dict[str, int]
) -> dict[str, float]:
    """The per-site densities ``--gate-density`` asks for (``global``: the uniform ones, as a reference)."""
    if mode in (GLOBAL, UNIFORM):
        return uniform_density(cost, target, dense_macs, groups)
    if not mode.endswith(".json"):
        raise ConfigError(f"--gate-density got {mode!r}; allowed: global, uniform, or a FILE.json of per-site ratios")
    ratios = from_file(
        cost, Path(mode), "--gate-density"
    )  # checks every site is there, no unknown one, ratios in [0, 1)
    out = {}
    for site, g in groups.items():  # the gated sites (a site without a gate stays dense)
        width, ratio = cost.site_widths[site], ratios[site]
        kept = (width - removed(width, ratio)) / width
        out[site] = kept_groups(g, kept) / g
    return out


def slide(step: int, warmup_steps: int, shape: str) -> float:
    """How far the target has moved from 1 towards its final value at ``step``: 0 -> 1."""
    if step >= warmup_steps:
        return 1.0
    t = step / warmup_steps
    return 0.5 * (1 - math.cos(math.pi * t)) if shape == "cosine" else t


def bounds(density: float, epoch: int, decay: float) -> tuple[float, float]:
    """DGNet's per-site bounds at ``epoch``: [d (1 - p), d + (1 - d) p], p = exp(-decay x epoch)."""
    p = math.exp(-decay * epoch)
    return density * (1 - p), density + (1 - density) * p
