"""Per-site pruning ratios: uniform, solved from a MAC target, or read from a JSON file (the RL agent's output).

A ratio r at a site of C channels removes round(r * C) channels, always keeping at least one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from ..base import ConfigError, check_ratio, check_target_macs
from ..cost import CostModel
from ..solve import monotone_bracket


def removed(width: int, ratio: float) -> int:
    return min(width - 1, round(ratio * width))


def keep_fractions(cost: CostModel, ratios: Mapping[str, float]) -> dict[str, float]:
    return {s: (w - removed(w, ratios.get(s, 0.0))) / w for s, w in cost.site_widths.items()}


def uniform(cost: CostModel, ratio: float) -> dict[str, float]:
    check_ratio(ratio, "--ratio")
    return dict.fromkeys(cost.site_widths, ratio)


def uniform_floor(cost: CostModel, dense_macs: float | None = None) -> float:
    """The least MACs over dense a uniform ratio reaches (every site down to its last channel)."""
    return cost.macs(keep_fractions(cost, dict.fromkeys(cost.site_widths, 0.999))) / (dense_macs or cost.dense_macs)


def solve_uniform_for_macs(cost: CostModel, target: float, dense_macs: float | None = None) -> dict[str, float]:
    """The smallest uniform ratio whose structured-effective MACs are <= target x dense (bisection)."""
    dense = dense_macs or cost.dense_macs
    check_target_macs(target)
    floor = uniform_floor(cost, dense)
    if target < floor:
        raise ConfigError(
            f"--target-macs {target} cannot be reached by pruning channel sites: the most a uniform ratio can do "
            f"is {floor:.3f} of dense; choose >= {floor:.3f}"
        )

    def too_costly(ratio: float) -> bool:
        return cost.macs(keep_fractions(cost, dict.fromkeys(cost.site_widths, ratio))) / dense > target

    _, ratio = monotone_bracket(too_costly, 0.0, 0.999, 40)
    return dict.fromkeys(cost.site_widths, ratio)


def from_file(cost: CostModel, path: str | Path, flag: str = "--ratios") -> dict[str, float]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    ratios = data.get("ratios", data) if isinstance(data, dict) else None
    if not isinstance(ratios, dict):
        raise ConfigError(f"{flag} {path}: expected {{site name: ratio}} (or {{'ratios': {{...}}}})")
    known = set(cost.site_widths)
    unknown, missing = sorted(set(ratios) - known), sorted(known - set(ratios))
    if unknown:
        raise ConfigError(f"{flag} {path}: unknown sites {unknown[:5]}; known: {', '.join(cost.site_widths)}")
    if missing:
        raise ConfigError(f"{flag} {path}: missing sites {missing[:5]} (every site needs a ratio)")
    for site, r in ratios.items():
        if not isinstance(r, int | float):
            raise ConfigError(f"{flag} {path}: ratio of {site} must be a number, got {r!r}")
        check_ratio(float(r), f"{flag} {path}: {site}")
    return {k: float(v) for k, v in ratios.items()}


def solve_sparsity_for_macs(macs_at: Callable[[float], float], target: float) -> float:
    """The smallest ratio whose MAC fraction ``macs_at(ratio)`` is <= target (bisection on a monotone curve)."""
    if macs_at(0.999) > target:
        raise ConfigError(f"--target-macs {target} cannot be reached by this pruner (floor {macs_at(0.999):.3f})")
    return monotone_bracket(lambda r: macs_at(r) > target, 0.0, 0.999, 30)[1]


def resolver(ratio: float | None, ratios_file: str | None, target_macs: float):
    """What ``--ratio`` / ``--ratios`` / ``--target-macs`` mean, as a function of the model's cost.

    ``macs_at`` (unstructured pruners whose layers end up with unequal sparsity, e.g. a global threshold): the
    nonzero-weight MAC fraction at a given overall sparsity, so the target is met in MACs, not in weights.
    """

    def resolve(cost: CostModel, structured: bool, macs_at: Callable[[float], float] | None = None) -> dict[str, float]:
        if ratios_file is not None:
            return from_file(cost, ratios_file)
        if ratio is not None:
            return uniform(cost, ratio)
        if target_macs >= 1:
            return uniform(cost, 0.0)
        if macs_at is not None:  # the pruner's own MAC curve (global rankings put the cuts unevenly)
            return uniform(cost, solve_sparsity_for_macs(macs_at, target_macs))
        if not structured:  # zeroed weights leave the shapes alone: the target applies to nonzero-weight MACs
            return uniform(cost, 1.0 - target_macs)  # per-layer sparsity: every layer's MACs shrink alike
        return solve_uniform_for_macs(cost, target_macs)

    return resolve
