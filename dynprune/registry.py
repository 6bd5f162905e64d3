"""One small name -> item registry, used for models, methods, gate estimators, pruners and benchmarks."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not registered; the message lists the known ones."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, item: T) -> T:
        """Register ``item`` under its own name: its ``name`` attribute, else (a plain function) its
        ``__name__``. The one way anything is registered: a call for an object (``REWARDS.add(Reward("accuracy",
        ...))``), a decorator for a function or class (``@MODELS.add``), and what ``discover`` does per file.
        Returns the item."""
        name = getattr(item, "name", None) or getattr(item, "__name__", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} needs a name (a `name` attribute or a function's __name__): {item!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def discover(self, package: str, attribute: str) -> Registry[T]:
        """Add the ``attribute`` of every module of ``package`` (one plug-in per file), under its ``name``.

        Plug-ins found this way need no list to be kept in step with the folder: adding one is adding its file.
        Modules whose name starts with ``_`` are skipped.
        """
        folder = importlib.import_module(package).__path__
        for info in sorted(pkgutil.iter_modules(folder), key=lambda i: i.name):
            if not info.name.startswith("_"):
                self.add(getattr(importlib.import_module(f"{package}.{info.name}"), attribute))
        return self

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
