"""Child processes die with their parent: a comparison killed with ``kill -9`` leaves no worker or search behind.

A killed parent cannot clean up, so each child asks the kernel to send it SIGTERM when its parent dies (Linux's
``PR_SET_PDEATHSIG``); a grandchild (the RL search a worker starts) asks the same of its own parent, so the whole
tree goes. Elsewhere this is a no-op: orphans can outlive a killed parent there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
# resolved here, in the parent: find_library runs processes, which a preexec_fn child of a threaded parent must not
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """Ask for SIGTERM when the parent process dies (call it in the child: as a ``preexec_fn`` or a pool
    initializer). Linux only; a no-op elsewhere."""
    if _LIBC is None:
        return
    parent = os.getppid()
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was in place: go now
        os.kill(os.getpid(), signal.SIGTERM)
