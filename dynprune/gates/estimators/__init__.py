"""Every gate estimator, one per file in this folder; each module's ``ESTIMATOR`` is registered under its name."""

from __future__ import annotations

from typing import Any

from ...registry import Registry
from ..estimator import Estimator

ESTIMATORS: Registry[type[Estimator]] = Registry("gate estimator").discover(__name__, "ESTIMATOR")


def create_estimator(name: str, options: Any | None = None) -> Estimator:
    return ESTIMATORS.get(name)(options)


__all__ = ["ESTIMATORS", "Estimator", "create_estimator"]
