"""What every dynprune command does around its work: a user mistake is one line on stderr and exit 2 (never a
traceback), and Ctrl-C or SIGTERM stop cleanly with a message saying how to continue (exit 130)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from .base import ConfigError
from .checkpoints import CheckpointError
from .data import DataError
from .track import TrackingError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, CheckpointError, TrackingError)


def run_command(
    prog: str,
    work: Callable[[], int],
    interrupted: str | Callable[[], str],
    user_errors: tuple[type[Exception], ...] = (),
) -> int:
    """``work()``'s exit code; ``USER_ERRORS`` and ``user_errors`` become ``prog: error: ...`` and exit 2."""
    # Ctrl-C and SIGTERM raise KeyboardInterrupt even when the shell started us with SIGINT ignored (background
    # jobs, nohup), so the work stops at a point where what is finished is saved.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return work()
    except (*USER_ERRORS, *user_errors) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        said = interrupted() if callable(interrupted) else interrupted  # what is really there at that moment
        print(f"\n{prog}: interrupted; {said}", file=sys.stderr)
        return 130
