"""Where a command writes: checked before any work, so a bad ``--out`` or ``--json`` is one clear line at the start
instead of a traceback after minutes of training or timing (and never lost work)."""

from __future__ import annotations

from pathlib import Path

from .base import ConfigError


def _file_in_the_way(path: Path) -> Path | None:
    """``path`` itself or the first of its existing ancestors that is a file, not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_folder(out_dir: Path | str, flag: str = "--out") -> None:
    """A folder that could be created at ``out_dir`` (nothing is created: for dry runs and plans)."""
    out_dir = Path(out_dir)
    blocker = _file_in_the_way(out_dir)
    if blocker == out_dir:
        raise ConfigError(f"{flag} {out_dir} is a file; give a folder for the run")
    if blocker is not None:
        raise ConfigError(f"{flag} {out_dir}: {blocker} is a file, not a folder")


def prepare_folder(out_dir: Path | str, flag: str = "--out") -> None:
    """Create ``out_dir`` and check it can be written (one clear line if it is a file or cannot be written)."""
    out_dir = Path(out_dir)
    check_folder(out_dir, flag)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{flag} {out_dir}: cannot write there ({exc.strerror or exc})") from None


def check_output_file(path: Path | str, flag: str, example: str = "out.json") -> None:
    """A file that can be written at ``path``: not a folder, and its folder exists."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name such as {path / example}")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise ConfigError(f"{flag} {path}: {blocker} is a file, not a folder")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist")
    # a read-only folder (or file system) found now, not after the minutes of work whose figures it would hold
    probe = path.parent / f".{path.name}.write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
