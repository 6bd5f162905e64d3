"""``--resume`` continues a run as its own ``config.yaml`` says: flags need not be repeated, and a flag that
contradicts the saved config is an error (a resumed run that silently changed its recipe would not be the run).

Only what does not change the result may differ: where and how fast it runs, and how it is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .base import ConfigError, flag
from .config import MAY_DIFFER


def _value_of(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def given_fields(argv: Sequence[str]) -> set[str]:
    """The config fields named by flags in ``argv`` (``--no-x`` names ``x``)."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            names.add((name[3:] if name.startswith("no-") else name).replace("-", "_"))
    return names


def saved_config(argv: Sequence[str]) -> Path | None:
    """The run's own config.yaml when ``argv`` resumes a run in an explicit ``--out`` (and gives no --config)."""
    if "--resume" not in argv or _value_of(argv, "--config") is not None:
        return None
    out = _value_of(argv, "--out")
    path = Path(out) / "config.yaml" if out else None
    return path if path is not None and path.is_file() else None


def check_no_contradiction(saved: Path, argv: Sequence[str], flat: dict[str, Any]) -> None:
    """One clear error if a flag given with --resume changes a value the run was started with."""
    values = yaml.safe_load(saved.read_text()) or {}
    for name in sorted(given_fields(argv) - MAY_DIFFER):
        if name in values and values[name] != flat.get(name):
            raise ConfigError(
                f"--{flag(name)} {flat.get(name)} contradicts the run's {saved} ({name}: {values[name]}); "
                "--resume continues the run as it was started: drop the flag"
            )
