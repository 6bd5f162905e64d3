"""The comparison report's numbers: mean +- std over seeds, and a single seed said as such."""

from __future__ import annotations

import statistics

from dynprune.compare.report import format_report


def _row(method: str, seed: int, top1: float, family: str = "static") -> dict:
    return {
        "method": method,
        "family": family,
        "target": 0.5,
        "seed": seed,
        "top1": top1,
        "macs_ratio": 0.5,
        "macs_p99_ratio": 0.5,
        "params": 1000,
        "latency_b1_ms": None,
        "latency_b64_ms": None,
        "speedup_b64": None,
        "realization_b64": None,
        "run_dir": "x",
    }


def test_one_seed_is_written_as_such_never_plus_minus_zero():
    report = format_report("t", [_row("dense", 0, 93.0, "dense"), _row("l1-filter", 0, 92.5)], [0.5])
    assert "+- 0.00" not in report
    assert "93.00 (1 seed)" in report and "92.50 (1 seed)" in report


def test_several_seeds_give_mean_and_sample_std():
    rows = [_row("l1-filter", 0, 92.0), _row("l1-filter", 1, 93.0), _row("ste", 0, 90.0), _row("ste", 1, 90.5)]
    report = format_report("t", rows, [0.5])
    assert f"**92.50 +- {statistics.stdev([92.0, 93.0]):.2f}**" in report  # the best method in bold
    assert f"90.25 +- {statistics.stdev([90.0, 90.5]):.2f}" in report


def test_gated_rows_show_conditional_share_and_dynamic_gain_next_to_top1():
    topk = [
        {**_row("topk", s, 90.0 + s, "dynamic"), "conditional_share": c, "dynamic_gain": g}
        for s, c, g in ((0, 0.3, 1.0), (1, 0.5, 2.0))
    ]
    report = format_report("t", [*topk, _row("l1-filter", 0, 92.5)], [0.5])
    topk_line = next(line for line in report.splitlines() if line.startswith("| topk |"))
    assert f"| 0.40 | 1.50 +- {statistics.stdev([1.0, 2.0]):.2f} |" in topk_line  # mean share, gain mean +- std
    l1_line = next(line for line in report.splitlines() if line.startswith("| l1-filter |"))
    assert "| - | - |" in l1_line  # a static row has no gates to measure
