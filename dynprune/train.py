"""python -m dynprune.train: train one model with one method and write its run folder."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .catalog import parse_train_cli
from .cli import run_command
from .engine import TrainingDiverged
from .runner import run_training

PROG = "python -m dynprune.train"


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_train_cli(argv, PROG, "Train a CNN on the dynprune spine and write <out>/result.json.")

    def work() -> int:
        try:
            result = run_training(cfg)
        except TrainingDiverged as exc:
            print(f"{PROG}: training diverged: {exc}", file=sys.stderr)
            return 1
        if "top1" not in result:  # a torchrun rank other than 0: rank 0 reports
            return 0
        print(
            f"test top1 {result['top1']:.2f}%  MACs {result['macs'] / 1e6:.2f}M "
            f"({result['macs_ratio']:.3f}x dense)  -> {cfg.run_dir}/result.json"
        )
        return 0

    interrupted = f"the last finished epoch is saved in {cfg.run_dir}/checkpoint.pt (continue with --resume)"
    return run_command(PROG, work, interrupted)


if __name__ == "__main__":
    sys.exit(main())
