"""python -m dynprune.bench pruned: a (hard-)pruned checkpoint timed against its dense architecture."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from ..base import ConfigError
from ..cost import measure_latency
from ..fold import fold_bn
from ..rebuild import pruned_and_dense_from_checkpoint


def cli(argv: Sequence[str]) -> int:
    """Latency of a (hard-)pruned checkpoint vs its dense architecture, BN folded in both."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench pruned")
    parser.add_argument("checkpoints", nargs="+", help="checkpoint.pt files of pruned runs")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for path in args.checkpoints:
        try:
            model, dense, shape, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
        except ValueError as exc:  # e.g. a gated checkpoint: one line through the CLI wrapper, not a usage dump
            raise ConfigError(str(exc)) from None
        t_pruned = measure_latency(fold_bn(model), shape, batches, args.threads, args.min_run_time)
        t_dense = measure_latency(fold_bn(dense), shape, batches, args.threads, args.min_run_time)
        for b in batches:
            speedup = t_dense[f"b{b}"] / t_pruned[f"b{b}"]
            rows.append(
                {
                    "checkpoint": path,
                    "method": ckpt.get("method"),
                    "batch": b,
                    "macs_ratio": ratio,
                    "dense_ms": t_dense[f"b{b}"],
                    "pruned_ms": t_pruned[f"b{b}"],
                    "measured_speedup": speedup,
                    "theoretical_speedup": 1 / ratio,
                    "realization": speedup * ratio,
                }
            )
    print(
        f"{'method':<16}{'batch':>6}{'MACs':>7}{'dense ms':>10}{'pruned ms':>11}"
        f"{'theory':>8}{'measured':>9}{'realiz.':>8}"
    )
    for r in rows:
        print(
            f"{r['method']!s:<16}{r['batch']:>6}{r['macs_ratio']:>7.3f}{r['dense_ms']:>10.3f}{r['pruned_ms']:>11.3f}"
            f"{r['theoretical_speedup']:>8.2f}{r['measured_speedup']:>9.2f}{r['realization']:>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0
