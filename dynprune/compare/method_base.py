"""The base of every comparison method (``methods.py`` registers them): what a cell of it is, runs and deploys."""

from __future__ import annotations

from typing import Any

import torch

from ..catalog import train_config
from ..checkpoints import CHECKPOINT
from ..cost import CostModel
from ..rebuild import deployable_from_checkpoint
from ..runner import run_training
from .cell import Cell
from .config import CompareConfig


class CompareMethod:
    """The base: a method fine-tuned from the dense checkpoint at each MAC target."""

    family = "static"  # a label for the report's family column and --list
    uses_target = True
    from_dense = True  # fine-tuned from the dense checkpoint (else trained from scratch)
    is_reference = False  # the dense model: trained first, every other cell starts from it
    own_architecture = False  # trains another architecture: its own macs_dense is not the reference
    per_sample_cost = False  # MACs differ per sample (the report shows their p99)
    cost_factor = 1.0  # training step time relative to the dense model's
    extra_val_passes = 3.0  # work after training, in validation passes (test set, latency, ...)

    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        """TrainConfig values of a cell at ``target`` (on top of the comparison's shared ones)."""
        return {}

    def check_available(self) -> None:
        """Raise ConfigError if something this method needs is not installed."""

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        """Raise ConfigError if ``target`` cannot be reached by this method."""

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        """Fill in what depends on the data or the model (a compact width, a search's arguments)."""

    def extra_seconds(self, cfg: CompareConfig, cell: Cell, per_image_s: float) -> float:
        """Estimated seconds outside training and evaluation (e.g. a policy search)."""
        return 0.0

    def before_training(self, cell: Cell) -> None:
        """Runs before the cell's training run (e.g. the policy search whose output it fine-tunes)."""

    def run(self, cell: Cell) -> dict[str, Any]:
        """The cell's work after ``before_training``: its training run (an interrupted one resumes); returns
        the result.json it wrote into the cell's folder."""
        values = {**cell.values, "resume": (cell.run_dir / CHECKPOINT).is_file()}
        return run_training(train_config(values))

    def deployable(self, cell: Cell) -> tuple[torch.nn.Module, dict[str, Any]]:
        """(the model the finished cell deploys, a checkpoint whose config names its data): what its latency is
        timed on (hard-pruned: narrower; gated: deploy mode)."""
        return deployable_from_checkpoint(cell.run_dir / CHECKPOINT)
