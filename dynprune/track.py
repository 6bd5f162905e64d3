"""Experiment tracking through wandb, imported lazily: with mode ``disabled`` wandb is never needed.

Metric names are namespaced: ``train/*`` per step, ``val/*`` and ``cost/*`` per epoch, ``final/*`` at the end.
``offline`` (the default) writes the run under ``<out>/wandb/`` for a later ``wandb sync``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TrackingError(RuntimeError):
    pass


class Tracker:
    def __init__(
        self,
        mode: str,
        project: str,
        out_dir: Path,
        config: dict[str, Any],
        name: str | None = None,
        group: str | None = None,
    ) -> None:
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            raise TrackingError(
                f"--wandb {mode} needs wandb: pip install 'dynprune[wandb]' (or pass --wandb disabled)"
            ) from None
        out_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            mode=mode,
            dir=str(out_dir),
            config=config,
            name=name or out_dir.name,
            group=group,
            reinit="finish_previous",
        )

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for key, value in values.items():
                self.run.summary[key] = value

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def histogram(self, name: str, values: Any) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Histogram(values.tolist() if hasattr(values, "tolist") else values)})

    def image(self, name: str, path: Any) -> None:
        """A PNG of the run folder, shown as an image panel."""
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Image(str(path))})

    def table(self, name: str, columns: list[str], rows: list[Any]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=[list(r) for r in rows])})
