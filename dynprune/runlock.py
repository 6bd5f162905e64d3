"""One run per run folder: a lock file names the process that holds ``--out``; a second run gets one clear line.

Two runs started with the same ``--out`` would interleave one ``metrics.jsonl`` and overwrite each other's
checkpoint and result. The lock (``<out>/.lock``, created with O_EXCL) records the holder's pid, host, start time
and command; a lock whose process is gone (``kill -9``, a crash) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .base import ConfigError
from .outputs import prepare_folder

LOCK = ".lock"


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as stale


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (KeyError, ValueError, TypeError):
        return False
    return True


@contextlib.contextmanager
def locked_run_folder(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this process while the block runs; the folders this call created (``out_dir`` and any
    missing parents, such as ``runs/`` of the default ``runs/<method>``) that the block left empty (a run refused
    before it wrote anything) are removed again."""
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # innermost first
    prepare_folder(out_dir)
    lock = out_dir / LOCK
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and holder.get("pid") != os.getpid() and _alive(holder):
                raise ConfigError(
                    f"--out {out_dir} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"since {holder.get('started')}: {holder.get('command')}); wait for it or choose another --out "
                    f"(if that run is gone, delete {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        break
    else:
        raise ConfigError(f"--out {out_dir}: another run took the folder at the same moment; choose another --out")
    for leftover in out_dir.glob(".*.tmp"):  # a write a kill -9 cut short (atomic writes go through these)
        leftover.unlink(missing_ok=True)
    try:
        yield
    finally:
        if (_holder(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()  # only succeeds while the folder is empty
            except OSError:
                break  # kept (the run wrote there, or another run uses it): so are the folders above it
