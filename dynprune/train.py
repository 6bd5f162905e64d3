"""python -m dynprune.train: train one model with one method and write its run folder."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .base import ConfigError
from .catalog import option_groups, parse_train_cli
from .checkpoints import CHECKPOINT
from .cli import run_command
from .config import TrainConfig, to_dict
from .distributed import is_peer_failure
from .engine import TrainingDiverged
from .resume_args import check_no_contradiction, saved_run
from .runner import run_training

PROG = "python -m dynprune.train"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # --resume: the run's own config is the preset, flags need not be repeated
        saved = saved_run(argv, TrainConfig, option_groups())
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    cfg = parse_train_cli(
        argv, PROG, "Train a CNN on the dynprune spine and write <out>/result.json.", saved and saved.values
    )
    if saved is not None:
        try:
            check_no_contradiction(saved, argv, to_dict(cfg))
        except ConfigError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2

    def work() -> int:
        try:
            result = run_training(cfg)
        except TrainingDiverged as exc:
            print(f"{PROG}: training diverged: {exc}", file=sys.stderr)
            return 1
        except RuntimeError as exc:
            if not is_peer_failure(exc):
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            print(f"{PROG}: another torchrun process stopped ({first}); {interrupted()}", file=sys.stderr)
            return 1
        if "top1" not in result:  # a torchrun rank other than 0: rank 0 reports
            return 0
        print(
            f"test top1 {result['top1']:.2f}%  MACs {result['macs'] / 1e6:.2f}M "
            f"({result['macs_ratio']:.3f}x dense)  -> {cfg.run_dir}/result.json"
        )
        return 0

    def interrupted() -> str:
        checkpoint = cfg.run_dir / CHECKPOINT
        if checkpoint.is_file():
            return f"the last finished epoch is saved in {checkpoint} (continue with --resume)"
        return "no epoch had finished, so nothing was saved; start the run again"

    return run_command(PROG, work, interrupted)


if __name__ == "__main__":
    sys.exit(main())
