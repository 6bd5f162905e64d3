"""python -m dynprune.bench pruned: a (hard-)pruned checkpoint timed against its dense architecture."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..base import ConfigError, check_positive, option
from ..config import parse_cli
from ..fold import fold_bn
from ..outputs import check_output_file
from ..rebuild import pruned_and_dense_from_checkpoint
from ..timing import interleaved_timing, round_ratio

PROG = "python -m dynprune.bench pruned"


@dataclass
class PrunedBenchConfig:
    """python -m dynprune.bench pruned CHECKPOINT...: what to time, and how."""

    checkpoints: list[str] = option([], "checkpoint.pt files of pruned runs", positional=True)
    batch_sizes: list[int] = option([1, 64], "comma list of batch sizes timed")
    threads: int = option(2, "torch CPU threads")
    min_run_time: float = option(1.0, "seconds of timing per measurement")
    json: str | None = option(None, "write the rows to this JSON file")

    def validate(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes must be integers >= 1, got {self.batch_sizes}")
        check_positive(self, "threads", "min_run_time")


def format_rows(rows: Sequence[dict]) -> str:
    lines = [
        f"{'method':<16}{'batch':>6}{'MACs':>7}{'dense ms':>10}{'pruned ms':>11}"
        f"{'theory':>8}{'measured':>9}{'realiz.':>8}{'spread':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r['method']!s:<16}{r['batch']:>6}{r['macs_ratio']:>7.3f}{r['dense_ms']:>10.3f}{r['pruned_ms']:>11.3f}"
            f"{r['theoretical_speedup']:>8.2f}{r['measured_speedup']:>9.2f}{r['realization']:>8.2f}"
            f"{r['spread']:>7.0%}{'' if r['stable'] else '  UNSTABLE: the machine was busy, do not trust this row'}"
        )
    return "\n".join(lines)


def cli(argv: Sequence[str]) -> int:
    """Latency of a (hard-)pruned checkpoint vs its dense architecture, BN folded in both."""
    args = parse_cli(PrunedBenchConfig, argv, PROG, cli.__doc__)
    if args.json:
        check_output_file(args.json, "--json")  # before the timing, not after it

    torch.set_num_threads(args.threads)
    batches = args.batch_sizes
    rows = []
    for path in args.checkpoints:
        try:
            model, dense, shape, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
        except ValueError as exc:  # e.g. a gated checkpoint: one line through the CLI wrapper, not a usage dump
            raise ConfigError(str(exc)) from None
        pruned, reference = fold_bn(model).eval(), fold_bn(dense).eval()
        for b in batches:
            x = torch.randn(b, *shape)
            # dense and pruned in alternating rounds until both settle: drift on a busy machine hits both alike
            timed, rounds = interleaved_timing(
                {"dense": reference, "pruned": pruned}, x, args.threads, args.min_run_time
            )
            speedup = round_ratio(rounds, "dense", "pruned")
            rows.append(
                {
                    "checkpoint": path,
                    "method": ckpt.get("method"),
                    "batch": b,
                    "macs_ratio": ratio,
                    "dense_ms": timed["dense"].ms,
                    "pruned_ms": timed["pruned"].ms,
                    "measured_speedup": speedup,
                    "theoretical_speedup": 1 / ratio,
                    "realization": speedup * ratio,
                    "spread": max(t.spread for t in timed.values()),
                    "rounds": timed["dense"].rounds,
                    "stable": all(t.stable for t in timed.values()),
                }
            )
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0
