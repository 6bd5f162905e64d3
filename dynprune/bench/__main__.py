"""python -m dynprune.bench NAME: measurement scripts that print a table (figures go to BENCHMARKS.md).

Each benchmark is a module of this package with a ``cli(argv)`` that parses its own flags. Names map to module
paths resolved on first use, so ``--help`` of one benchmark does not import the others (torch, the data sets).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ..cli import run_command

PROG = "python -m dynprune.bench"
BENCHMARKS: dict[str, str] = {
    "overhead": "dynprune.bench.overhead",
    "dynamic": "dynprune.bench.dynamic",
    "pruned": "dynprune.bench.pruned",
    "ddp": "dynprune.bench.ddp",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        known = ", ".join(sorted(BENCHMARKS))
        print(f"{PROG}: error: choose a benchmark: {known}", file=sys.stderr)
        return 2
    benchmark = importlib.import_module(BENCHMARKS[argv[0]])
    return run_command(f"{PROG} {argv[0]}", lambda: benchmark.cli(argv[1:]), "nothing was written")


if __name__ == "__main__":
    sys.exit(main())
