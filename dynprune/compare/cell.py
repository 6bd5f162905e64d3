"""One cell of a comparison: a method at a MAC target and a seed, run as a normal run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoints import read_result


@dataclass
class Cell:
    method: str
    target: float  # MAC target (1.0 for the dense model)
    seed: int
    run_dir: Path
    values: dict[str, Any]  # TrainConfig values of the cell's training run
    search_args: list[str] = field(default_factory=list)  # rl: arguments of python -m agents.search
    # what a method's prepare_cell works out beside the TrainConfig values (a cascade: the MACs it calibrates to)
    method_data: dict[str, Any] = field(default_factory=dict)
    external: bool = False  # the given dense checkpoint's own folder: read, never trained or written
    estimate_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.method} @ {self.target:.2f} seed {self.seed}"

    @property
    def needs_dense(self) -> bool:
        """Starts from, or learns from, a dense checkpoint: runs once every dense cell has finished."""
        return bool(self.values.get("init") or self.values.get("distill"))

    @property
    def done(self) -> bool:
        """Finished: a readable result.json (a cut or empty one is redone from the cell's checkpoint)."""
        return read_result(self.run_dir / "result.json") is not None
