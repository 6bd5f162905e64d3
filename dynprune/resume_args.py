"""``--resume`` continues a run as its own ``config.yaml`` says: flags need not be repeated, and a flag that
contradicts the saved config is an error (a resumed run that silently changed its recipe would not be the run).

Only what does not change the result may differ: where and how fast it runs, and how it is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ConfigError, flag, given_fields
from .checkpoints import CHECKPOINT, CheckpointError, load_checkpoint
from .config import MAY_DIFFER, field_owners, load_yaml


def _value_of(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class SavedRun:
    """The flat config a resumed run was started with, and where it was read."""

    values: dict[str, Any]
    source: str


def saved_run(argv: Sequence[str], cls: type, groups: Mapping[str, type]) -> SavedRun | None:
    """What ``argv`` resumes (``--resume`` with an explicit ``--out`` and no ``--config``): the checkpoint's own
    config (config.yaml may be empty, torn, edited or gone), else config.yaml for a run stopped before its first
    checkpoint."""
    if "--resume" not in argv or _value_of(argv, "--config") is not None:
        return None
    out = _value_of(argv, "--out")
    if not out:
        return None
    checkpoint = Path(out) / CHECKPOINT
    if checkpoint.is_file():
        try:
            config = load_checkpoint(checkpoint).get("config")
        except CheckpointError:
            config = None  # the resume itself says what is wrong with it
        if isinstance(config, dict):
            names = set(field_owners(cls, groups))  # keys of options since removed are dropped
            return SavedRun({k: v for k, v in config.items() if k in names}, str(checkpoint))
    path = Path(out) / "config.yaml"
    return SavedRun(load_yaml(cls, path, groups), str(path)) if path.is_file() else None


def check_no_contradiction(saved: SavedRun, argv: Sequence[str], flat: dict[str, Any]) -> None:
    """One clear error if a flag given with --resume changes a value the run was started with."""
    for name in sorted(given_fields(argv) - MAY_DIFFER):
        if name in saved.values and saved.values[name] != flat.get(name):
            raise ConfigError(
                f"--{flag(name)} {flat.get(name)} contradicts the run's {saved.source} ({name}: "
                f"{saved.values[name]}); --resume continues the run as it was started: drop the flag"
            )
