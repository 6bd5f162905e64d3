"""The comparison's outputs: results.csv/json (one row per cell), report.md (a table per target, mean +- std over
seeds), pareto.png (accuracy vs MACs) and latency.png (accuracy vs measured latency)."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoints import read_result
from ..plots import pyplot
from .cell import Cell
from .methods import COMPARE_METHODS, cell_method

COLUMNS = (
    "method",
    "family",
    "target",
    "seed",
    "top1",
    "macs_ratio",
    "macs_p99_ratio",
    "params",
    "latency_b1_ms",
    "latency_b64_ms",
    "speedup_b64",
    "realization_b64",
    "latency_stable",
    "conditional_share",
    "dynamic_gain",
    "run_dir",
)
# how dynamic a row is (gates/dynamism.py; a cascade has a dynamic gain of its own); else empty
DYNAMISM_FIGURES = ("conditional_share", "dynamic_gain")


def _is_reference(method: str) -> bool:
    """The row every other is read against (the dense model); names from older results may no longer exist."""
    return method in COMPARE_METHODS and COMPARE_METHODS[method].is_reference


def collect_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    results = {id(c): read_result(c.run_dir / "result.json") for c in cells if c.done}
    dense_b64 = {
        c.seed: (results[id(c)].get("latency_ms") or {}).get("b64")
        for c in cells
        if cell_method(c).is_reference and id(c) in results
    }
    # Every ratio is taken against the reference model's dense MACs (a compact model's own dense MACs are not it).
    reference = next(
        (r["macs_dense"] for c in cells if (r := results.get(id(c))) and not cell_method(c).own_architecture),
        None,
    )
    rows = []
    for cell in cells:
        result = results.get(id(cell))
        if result is None:
            continue
        latency = result.get("latency_ms") or {}
        dense_macs = reference or result["macs_dense"]
        macs_ratio = result.get("macs_nonzero", result["macs"]) / dense_macs
        dense = dense_b64.get(cell.seed) or next((v for v in dense_b64.values() if v), None)
        speedup = dense / latency["b64"] if dense and latency.get("b64") else None
        rows.append(
            {
                "method": cell.method,
                "family": cell_method(cell).family,
                "target": cell.target,
                "seed": cell.seed,
                "top1": result["top1"],
                "macs_ratio": macs_ratio,
                "macs_p99_ratio": result["macs_p99"] / dense_macs,
                "params": result["params"],
                "latency_b1_ms": latency.get("b1"),
                "latency_b64_ms": latency.get("b64"),
                "speedup_b64": speedup,
                "realization_b64": speedup * macs_ratio if speedup else None,
                # older results have no verdict; their timing then counts as stable (it was not checked)
                "latency_stable": bool(latency.get("stable", True)) if latency else None,
                **{key: result.get(key) for key in DYNAMISM_FIGURES},
                "run_dir": str(cell.run_dir),
            }
        )
    return rows


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard deviation; no std from one value (a single seed says nothing about the spread)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_top1(mean: float, std: float | None, seeds: int) -> str:
    """``mean +- std`` over seeds, or ``mean (1 seed)``: never a ``+- 0.00`` made up from one run."""
    return f"{mean:.2f} +- {std:.2f}" if std is not None and seeds > 1 else f"{mean:.2f} ({seeds} seed)"


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """(method, target) -> mean (and std of top1) over seeds."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["target"])].append(row)
    out = {}
    for key, group in groups.items():
        agg: dict[str, Any] = {"seeds": len(group), "family": group[0]["family"]}
        agg["latency_stable"] = all(r.get("latency_stable") is not False for r in group)
        numeric = ("top1", "macs_ratio", "macs_p99_ratio", "params", "latency_b1_ms", "latency_b64_ms", "speedup_b64")
        for col in (*numeric, *DYNAMISM_FIGURES):
            values = [r[col] for r in group if r.get(col) is not None]
            agg[col], agg[f"{col}_std"] = _mean_std(values) if values else (None, None)
        out[key] = agg
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _nonzero_note(agg: dict) -> str:
    """The report's note on the rows whose MACs are nonzero-weight MACs (the unstructured pruners among them)."""
    methods = {m for m, _ in agg if m in COMPARE_METHODS}  # a results folder may name a method since removed
    unstructured = sorted(m for m in methods if getattr(COMPARE_METHODS[m], "structured", True) is False)
    return (
        f"MACs of {', '.join(unstructured)} are nonzero-weight MACs (no real speed-up on dense kernels); "
        if unstructured
        else ""
    )


def format_report(title: str, rows: list[dict[str, Any]], targets: Sequence[float]) -> str:
    agg = aggregate(rows)
    lines = [f"# {title}", ""]
    dense = [v for (m, _), v in agg.items() if _is_reference(m)]
    if dense:
        d = dense[0]
        lines += [
            f"Dense: top-1 **{format_top1(d['top1'], d['top1_std'], d['seeds'])}** %, "
            f"b64 {_fmt(d['latency_b64_ms'], '.1f')} ms.",
            "",
        ]
    for target in targets:
        entries = {m: v for (m, t), v in agg.items() if t == target and not _is_reference(m)}
        if not entries:
            continue
        best = max(entries, key=lambda m: entries[m]["top1"])
        lines += [
            f"## {target:.0%} of dense MACs",
            "",
            "| method | top-1 % (mean +- std) | conditional share | dynamic gain | MACs / dense (p99) | params | b1 ms "
            "| b64 ms | speed-up b64 | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, v in sorted(entries.items(), key=lambda kv: -kv[1]["top1"]):
            acc = format_top1(v["top1"], v["top1_std"], v["seeds"])
            acc = f"**{acc}**" if method == best else acc
            p99 = f" ({v['macs_p99_ratio']:.3f})" if COMPARE_METHODS[method].per_sample_cost else ""
            busy = "" if v["latency_stable"] else " (!)"  # a timing whose rounds never agreed
            gain = v["dynamic_gain"]
            gain = "-" if gain is None else format_top1(gain, v["dynamic_gain_std"], v["seeds"])
            lines.append(
                f"| {method} | {acc} | {_fmt(v['conditional_share'], '.2f')} | {gain} | "
                f"{v['macs_ratio']:.3f}{p99} | {v['params']:,.0f} | "
                f"{_fmt(v['latency_b1_ms'], '.2f')}{busy} | {_fmt(v['latency_b64_ms'], '.1f')}{busy} | "
                f"{_fmt(v['speedup_b64'], '.2f')}x | {v['seeds']} |"
            )
        lines.append("")
    lines.append(
        "Top-1: mean +- sample standard deviation over seeds; a single seed is marked (1 seed). "
        f"{_nonzero_note(agg)}dynamic methods "
        "are timed in deploy mode on real test images, structured ones hard-pruned. (!): a latency whose timing rounds "
        "never agreed within 10% (the machine was busy): do not trust it. Gated rows: conditional share = mean over "
        "sites of the share of channels open for 1-99% of the test images (0: static pruning through gates); "
        "dynamic gain = top-1 points lost when each site is frozen to the channels it opened most often on the "
        "validation split (same MACs, no retraining; a boosted gate keeps its per-input scale; width gates: the "
        "trained width nearest their mean, so other MACs, and result.json's routing_gain holds the MACs). Cascades: "
        "dynamic gain = top-1 minus a static mix of the same members at the same mean MACs (inputs sent to the big "
        "member at random), p99 = the MACs of an input that ran every member."
    )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], x_key: str, xlabel: str, path: Path, title: str) -> None:
    agg = aggregate(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in sorted({m for m, _ in agg}):
        points = sorted(
            (v[x_key], v["top1"], v["top1_std"] or 0.0) for (m, _), v in agg.items() if m == method and v[x_key]
        )
        if not points:
            continue
        xs, ys, errs = zip(*points, strict=True)
        style = {"marker": "*", "markersize": 12} if _is_reference(method) else {"marker": "o", "capsize": 3}
        ax.errorbar(xs, ys, yerr=errs, label=method, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, title: str, rows: list[dict[str, Any]], targets: Sequence[float]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    report = format_report(title, rows, targets)
    (out / "report.md").write_text(report)
    _plot(rows, "macs_ratio", "MACs / dense MACs (mean per sample)", out / "pareto.png", f"{title}: accuracy vs MACs")
    _plot(
        rows, "latency_b64_ms", "measured latency, batch 64 (ms)", out / "latency.png", f"{title}: accuracy vs latency"
    )
    return report
