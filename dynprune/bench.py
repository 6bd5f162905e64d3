"""python -m dynprune.bench NAME: measurement scripts that print a table (figures go to BENCHMARKS.md).

Benchmarks are registered by name; each parses its own flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

BENCHMARKS: dict[str, Callable[[Sequence[str]], int]] = {}


def register_benchmark(
    name: str,
) -> Callable[[Callable[[Sequence[str]], int]], Callable[[Sequence[str]], int]]:
    def wrap(fn: Callable[[Sequence[str]], int]) -> Callable[[Sequence[str]], int]:
        BENCHMARKS[name] = fn
        return fn

    return wrap


@register_benchmark("overhead")
def overhead(argv: Sequence[str]) -> int:
    """Time the dynprune Trainer against a bare PyTorch loop on the same model, data and batches."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench overhead")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from .overhead import compare_loops

    rows = compare_loops(args.model, args.dataset, args.batch_size, args.steps, args.repeats, args.threads)
    print(f"{'loop':<12}{'median s/step':>15}{'images/s':>12}")
    for name, seconds in rows.items():
        print(f"{name:<12}{seconds:>15.4f}{args.batch_size / seconds:>12.0f}")
    print(f"overhead: dynprune / bare = {rows['dynprune'] / rows['bare']:.3f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        known = ", ".join(sorted(BENCHMARKS))
        print(f"python -m dynprune.bench: error: choose a benchmark: {known}", file=sys.stderr)
        return 2
    return BENCHMARKS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
