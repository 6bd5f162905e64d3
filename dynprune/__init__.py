"""dynprune: dynamic (per-input) channel gates, static pruning and an RL policy search for CNNs, compared on one
footing. The CLIs are ``python -m dynprune.train``, ``dynprune.compare``, ``dynprune.export``, ``dynprune.bench``,
``dynprune.prune`` and ``agents.search``; as a library (``dynprune.api``, README "Use it in your own training
loop"): ``gate``, ``static_prune``, ``channel_sites``, ``macs``, ``load``; ``build_method`` and ``load_run`` are the
way every CLI builds its method and rebuilds a run.

The API is imported on first use (PEP 562), so ``python -m dynprune.train --help`` does not pay for it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Exported",
    "Gates",
    "Pruning",
    "Report",
    "build_method",
    "channel_sites",
    "gate",
    "load",
    "load_run",
    "macs",
    "static_prune",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'dynprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})  # so help(dynprune) and pydoc list the API too
