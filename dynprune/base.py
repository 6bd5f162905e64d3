"""The floor every layer stands on: the user-mistake error, ``option()`` for config fields, shared validators.

Imports nothing of the project, so every module (spine, methods, harness, benchmarks, agents) may import it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


#: the largest pruning ratio the RL search gives a site by default (AMC's bound); the search and the comparison's
#: ``rl`` cells share it
DEFAULT_R_MAX = 0.8


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its help text; a list default is copied per instance (never a shared default).
    ``choices``: a callable giving the allowed names, read from their registry when the parser is built (a list
    typed into the help goes stale when the registry grows)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def check_target_macs(value: float, name: str = "--target-macs") -> float:
    """A MAC target is a fraction of the dense model's MACs in (0, 1]."""
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {value}")
    return value


def check_ratio(value: float, name: str = "--ratio") -> float:
    """A pruning ratio removes a fraction in [0, 1) of a site's channels (one channel always stays)."""
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return value


def check_positive(owner: Any, *names: str) -> None:
    """Each named field of ``owner`` must be > 0."""
    for name in names:
        if getattr(owner, name) <= 0:
            raise ConfigError(f"--{flag(name)} must be > 0, got {getattr(owner, name)}")


def check_non_negative(owner: Any, *names: str) -> None:
    """Each named field of ``owner`` must be >= 0."""
    for name in names:
        if getattr(owner, name) < 0:
            raise ConfigError(f"--{flag(name)} must be >= 0, got {getattr(owner, name)}")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform says)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def check_threads(value: int, name: str = "--threads") -> None:
    """A thread count in [0, cores] (0 = torch's default): more threads than cores only thrash."""
    cores = usable_cores()
    if not 0 <= value <= cores:
        raise ConfigError(f"{name} must be in [0, {cores}] (this machine's cores; 0 = torch's default), got {value}")


def flag(name: str) -> str:
    """The command-line flag of a config field: ``target_macs`` -> ``target-macs``."""
    return name.replace("_", "-")


def given_fields(argv: Sequence[str]) -> set[str]:
    """The config fields named by flags in ``argv`` (``--no-x`` names ``x``): ``flag``'s inverse."""
    names = set()
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            names.add((name[3:] if name.startswith("no-") else name).replace("-", "_"))
    return names
