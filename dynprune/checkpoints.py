"""Checkpoint files: atomic writes (never a half-written file), safe loads (data, never code), clear errors.

A checkpoint holds everything needed to continue bit-for-bit plus the architecture it belongs to, so a
checkpoint of another model is refused with a clear message; it is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"


class CheckpointError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- checkpoints
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask  # what open() would give: a checkpoint is as readable as the rest of the run folder


def atomic_write_bytes(path: Path, payload: Callable[[Any], None]) -> None:
    """Write through a temp file in the same folder and rename it over ``path``: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _file_mode())  # mkstemp's 0600 would make checkpoints private while the rest is 0644
    try:
        with os.fdopen(fd, "wb") as fh:
            payload(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically; a full disk is one clear error saying what was needed and that the previous file is intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write_bytes(path, lambda fh: fh.write(buffer.getbuffer()))
    except OSError as exc:
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written before"
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):  # e.g. the folder made read-only or removed mid-run
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from None
        raise CheckpointError(
            f"cannot write {path}: no space left on the device (it needs {buffer.tell() / 1e6:.1f} MB); {kept}"
        ) from None


def read_result(path: Path) -> dict[str, Any] | None:
    """A run's result.json, or None where it is missing, cut short or not a run's result (a file a kill or a
    full disk left behind, or another file in its place): such a run is not finished."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and "top1" in data else None


def file_hash(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256: what a cache or a cascade records to notice a changed file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(json.dumps(data, indent=2).encode()))


def load_checkpoint(path: str | Path, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; if ``arch`` is given, refuse one made for another architecture."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable dynprune checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a dynprune checkpoint (no 'model' entry)")
    check_run_entries(path, state)
    if arch is not None and state.get("arch") != arch:
        raise CheckpointError(f"{path}: made for {state.get('arch')}, but this run is {arch}")
    return state


# what every tool needs to rebuild a run's model from its checkpoint alone, and the types it needs them in
_ARCH_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "in_channels": int,
    "num_classes": int,
    "image_size": int,
    "width": (int, float),
}


def check_run_entries(path: Path, state: dict[str, Any]) -> None:
    """A checkpoint that says which model it holds ('arch') and how its run was made ('config', a mapping), in
    the types the rebuild needs: a bare ``{"model": state_dict}`` or a hand-edited file is one line, not a
    KeyError deep inside a tool."""
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: its 'model' entry is a {type(state['model']).__name__}, not a state_dict")
    arch = state.get("arch")
    if not isinstance(arch, dict):
        raise CheckpointError(
            f"{path}: not a dynprune run's checkpoint (no 'arch' entry saying which model it holds: "
            f"{', '.join(_ARCH_TYPES)}); train or prune with dynprune to get one"
        )
    for key, kind in _ARCH_TYPES.items():
        value = arch.get(key)
        if key == "width" and value is None:  # checkpoints from before --width rebuild at full width
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: its 'arch' entry has {key}={value!r}, which is not a valid {key}")
    if not isinstance(state.get("config", {}), dict):
        raise CheckpointError(f"{path}: its 'config' entry is a {type(state['config']).__name__}, not a mapping")


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(f"{source}: weights do not fit this model ({detail})") from None
