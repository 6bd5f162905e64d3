"""python -m dynprune.cascade SMALL.pt BIG.pt --target-macs 0.25 --out DIR: a confidence cascade of pruned runs.

The members (dense or statically pruned runs of one data set, any number from 2, of one model or of several: a
shallow network in front of a pruned deep one; MACs count over the largest dense model among theirs) run
cheapest first; an input stops at the first member whose largest softmax probability reaches one threshold,
calibrated on the validation split so that the mean MACs meet the target. Writes DIR/cascade.json (the members,
their file hashes and the threshold: ``dynprune.cascade.load_cascade`` rebuilds it), DIR/result.json (test and
validation figures, each member alone and the random-exit baseline at the same exit shares) and DIR/cascade.png
(the accuracy-MACs curve).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base import ConfigError, check_target_macs, option
from ..cli import run_command
from ..config import parse_cli
from .build import build_cascade

PROG = "python -m dynprune.cascade"


@dataclass
class CascadeConfig:
    """python -m dynprune.cascade CHECKPOINT CHECKPOINT [...] --target-macs T --out DIR."""

    members: list[str] = option([], "checkpoint.pt of each member run (2 or more; any order)", positional=True)
    target_macs: float | None = option(
        None,
        "the mean MACs over the validation split, as a fraction of the dense model's (an input pays for every "
        "member it ran); required",
    )
    out: str = option("runs/cascade", "folder for cascade.json, result.json and cascade.png")
    data_dir: str | None = option(None, "where the runs' data set is, if not where they were trained")
    threads: int = option(2, "torch threads")

    def validate(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"a cascade needs 2 or more member checkpoints, got {len(self.members)}")
        if self.target_macs is None:
            raise ConfigError("--target-macs is required: the mean MACs to calibrate for (e.g. --target-macs 0.25)")
        check_target_macs(self.target_macs)
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


def run(args: CascadeConfig) -> int:
    out = Path(args.out)
    result = build_cascade(args.members, args.target_macs, out, args.data_dir)
    shares = ", ".join(f"{s:.2f}" for s in result["exit_shares"])
    print(
        f"threshold {result['threshold']:.4f}: test top1 {result['top1']:.2f}% at {result['macs_ratio']:.3f}x dense "
        f"MACs (validation {result['val_top1']:.2f}% at {result['val_macs_ratio']:.3f}x); exit shares {shares}; "
        f"random exits at those shares {result['random_exit_top1']:.2f}%, a static mix of the members at those "
        f"MACs {result['static_mix_top1']:.2f}% -> {out}/result.json"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(CascadeConfig, argv, PROG, __doc__.split("\n\n")[0])
    torch.set_num_threads(args.threads)
    return run_command(PROG, lambda: run(args), "run it again: a cascade is calibrated in minutes")


if __name__ == "__main__":
    sys.exit(main())
