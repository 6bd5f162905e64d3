"""python -m dynprune.train: train one model with one method and write its run folder."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from .config import ConfigError, TrainConfig, parse_cli
from .data import DataError
from .engine import CheckpointError, TrainingDiverged
from .track import TrackingError

PROG = "python -m dynprune.train"
USER_ERRORS = (ConfigError, DataError, CheckpointError, TrackingError)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_cli(TrainConfig, argv, PROG, "Train a CNN on the dynprune spine and write <out>/result.json.")
    from .runner import run_training  # after parsing, so --help and errors are instant

    # Ctrl-C and SIGTERM stop the run cleanly even when the shell started us with SIGINT ignored (background
    # jobs, nohup): the last finished epoch's checkpoint stays, and --resume continues from it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    try:
        result = run_training(cfg)
    except USER_ERRORS as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"{PROG}: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\n{PROG}: interrupted; the last finished epoch is saved in {cfg.run_dir}/checkpoint.pt "
            f"(continue with --resume)",
            file=sys.stderr,
        )
        return 130
    if "top1" not in result:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(
        f"test top1 {result['top1']:.2f}%  MACs {result['macs'] / 1e6:.2f}M "
        f"({result['macs_ratio']:.3f}x dense)  "
        f"-> {cfg.run_dir}/result.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
