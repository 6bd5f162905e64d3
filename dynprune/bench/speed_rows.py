"""The rows of ``bench dynamic``: one per (model, runtime, target, batch), printed as a table (with the flags
a reader must not miss: slower than dense, unstable, below the hard-pruned twin) and written as JSON."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class SpeedRow:
    model: str
    target: float
    batch: int
    macs_ratio: float  # measured mean per-sample MACs / dense, gate MACs included
    dense_ms: float
    masked_ms: float | None  # None for static checkpoints (no gates to mask with)
    deploy_ms: float
    strategy: str  # what deploy mode chose for this batch size; "static" for a statically pruned checkpoint
    theoretical_speedup: float
    measured_speedup: float
    realization: float
    spread: float = 0.0  # the widest relative spread (IQR / median over rounds) of the two figures compared
    stable: bool = True  # False: a figure did not settle (busy machine); do not trust the row
    runtime: str = "eager"  # where dense and deploy ran (see dynprune.runtimes); both in the same one
    hard_ms: float | None = None  # the same MACs statically hard-pruned (same k per site), fixed-k models only
    hard_realization: float | None = None  # its speed-up / its MAC reduction, timed in the same rounds


def print_progress(row: SpeedRow) -> None:
    """One line per finished row on stderr: a full table can take an hour (compiles, exports, rounds)."""
    print(
        f"[bench dynamic] {row.model} {row.runtime} target {row.target:.2f} batch {row.batch}: dense "
        f"{row.dense_ms:.2f} ms, deploy {row.deploy_ms:.2f} ms ({row.strategy}), x{row.measured_speedup:.2f}",
        file=sys.stderr,
        flush=True,
    )


def format_table(rows: Sequence[SpeedRow]) -> str:
    width = max([12] + [len(r.model) + 1 for r in rows])
    head = (
        f"{'model':<{width}}{'runtime':>12}{'target':>7}{'batch':>6}{'MACs':>7}{'dense ms':>10}{'masked ms':>11}"
        f"{'deploy ms':>11}{'strategy':>9}{'theory':>8}{'measured':>9}{'realiz.':>8}{'hard ms':>9}{'hard re.':>9}"
        f"{'spread':>8}"
    )
    lines = [head, "-" * len(head)]
    slower = 0
    for r in rows:
        # every exact executor evaluates the gates, so none can fall back to the dense model's time: say so
        flag = "  SLOWER than dense" if r.measured_speedup < 1 else ""
        flag += "" if r.stable else "  UNSTABLE: the machine was busy, do not trust this row"
        masked = "-" if r.masked_ms is None else f"{r.masked_ms:.3f}"
        slower += r.measured_speedup < 1
        if r.hard_realization is not None and r.realization < r.hard_realization:
            flag += "  below the hard-pruned twin"
        hard_ms = "-" if r.hard_ms is None else f"{r.hard_ms:.3f}"
        hard_re = "-" if r.hard_realization is None else f"{r.hard_realization:.2f}"
        lines.append(
            f"{r.model:<{width}}{r.runtime:>12}{r.target:>7.2f}{r.batch:>6d}{r.macs_ratio:>7.3f}{r.dense_ms:>10.3f}"
            f"{masked:>11}{r.deploy_ms:>11.3f}{r.strategy:>9}{r.theoretical_speedup:>8.2f}{r.measured_speedup:>9.2f}"
            f"{r.realization:>8.2f}{hard_ms:>9}{hard_re:>9}{r.spread:>7.0%}{flag}"
        )
    unstable = sum(not r.stable for r in rows)
    if unstable:
        lines.append(f"{unstable} row(s) UNSTABLE: their timing rounds never agreed within 10%; rerun when idle")
    if slower:
        lines.append(
            f"{slower} row(s) slower than dense: the fastest exact strategy still pays for the gates; run these "
            "with the dense model or a larger batch (see --breakdown)"
        )
    return "\n".join(lines)


def rows_as_dicts(rows: Sequence[SpeedRow]) -> list[dict]:
    return [asdict(r) for r in rows]
