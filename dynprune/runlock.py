"""One run per run folder: a lock file names the process that holds ``--out``; a second run gets one clear line.

Two runs started with the same ``--out`` would interleave one ``metrics.jsonl`` and overwrite each other's
checkpoint and result. The lock is ``fcntl.flock`` on ``<out>/.lock``: the kernel releases it when its holder
ends in any way (``kill -9``, a crash), so a lock is never stale and no process id is ever guessed at (a reused
pid cannot hold a folder). The file records the holder's pid, host, start time and command for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
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


def _acquire(lock: Path) -> int | None:
    """An open descriptor of ``lock`` holding its flock, or None while another process holds it. The path is
    checked to still name the locked file: a holder that ended removed it, and a lock on that removed file would
    not keep a third process out."""
    for _ in range(3):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise ConfigError(f"--out {lock.parent}: another run took the folder at the same moment; choose another --out")


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
    try:
        fd = _acquire(lock)
    except OSError as exc:  # e.g. a file system without flock (NFS mounted nolock): no safe lock, no run
        raise ConfigError(f"--out {out_dir}: cannot lock {lock} ({exc.strerror or exc}); use a local folder") from None
    if fd is None:
        holder = _holder(lock) or {}
        raise ConfigError(
            f"--out {out_dir} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')}: {holder.get('command')}); wait for it or choose another --out"
        )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        for leftover in out_dir.glob(".*.tmp"):  # a write a kill -9 cut short (atomic writes go through these)
            leftover.unlink(missing_ok=True)
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: no other process can have taken this file meanwhile
        os.close(fd)  # releases the lock
        for folder in created:
            try:
                folder.rmdir()  # only succeeds while the folder is empty
            except OSError:
                break  # kept (the run wrote there, or another run uses it): so are the folders above it
