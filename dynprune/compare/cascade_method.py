"""The comparison's ``cascade`` method: a confidence cascade of two l1-filter fine-tunes per cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..base import ConfigError
from ..cascade.build import build_cascade
from ..cascade.model import SPEC, load_cascade, load_member
from ..catalog import train_config
from ..checkpoints import CHECKPOINT, read_result
from ..cost import CostModel
from ..models import create_model
from ..models.cut import cut_refusal
from ..prune.ratios import keep_fractions, solve_uniform_for_macs, uniform_floor
from ..runner import run_training
from .cell import Cell
from .config import CompareConfig
from .method_base import CompareMethod
from .width_for_macs import width_for_macs


class CascadeMethod(CompareMethod):
    """A confidence cascade (``python -m dynprune.cascade``) of two l1-filter fine-tunes of the cell's dense model,
    at half and twice the target (at most halfway to 1), that share the cell's fine-tune epochs (the smaller
    member gets the odd one; each at least one): the same budget as every fine-tuned row. Calibrated on the
    validation split to the MACs uniform l1-filter pruning reaches at the target (its channel counts are whole,
    so l1-filter lands below the target: 0.086x at 0.1 on ResNet-20), so the two rows spend the same compute.
    The members' run folders are ``<cell>/members/t<target>``; each is reused when finished, so a stopped cell
    resumes. BENCHMARKS, "Confidence cascades": level with l1-filter at 0.25 at this budget, behind at 0.1; ahead
    at both when each member gets the whole budget."""

    family = "cascade"
    per_sample_cost = True
    extra_val_passes = 12.0  # every member on validation and test, the cascade on both, the curve
    pruner = "l1-filter"

    @staticmethod
    def member_targets(target: float) -> tuple[float, float]:
        return target / 2, min(2 * target, (1 + target) / 2)

    @staticmethod
    def member_epochs(epochs: int) -> tuple[int, int]:
        return max(1, epochs - epochs // 2), max(1, epochs // 2)

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        return self.static_options(target)

    def static_options(self, target: float) -> dict[str, Any]:
        """What makes a cell's run (and its members') a static l1-filter run at ``target``."""
        return {"prune": self.pruner, "hard": True, "target_macs": target}

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        small = self.member_targets(target)[0]
        floor = uniform_floor(cost)  # l1-filter's: every site down to its last channel
        if small < floor:
            raise ConfigError(
                f"{self.name}: target {target} cannot be reached: its smaller member runs at half the target, and "
                f"l1-filter reaches no less than {floor:.3f} of dense; choose >= {2 * floor:.3f}"
            )

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        ratios = solve_uniform_for_macs(cost, cell.target)
        cell.method_data["calibrate_to"] = cost.macs(keep_fractions(cost, ratios)) / cost.dense_macs

    def members(self, cell: Cell) -> list[tuple[Path, dict[str, Any]]]:
        """(run folder, TrainConfig values) of each member, cheapest first."""
        targets, epochs = self.member_targets(cell.target), self.member_epochs(cell.values["epochs"])
        folders = [cell.run_dir / "members" / f"t{t:g}" for t in targets]
        return [
            (folder, {**cell.values, "target_macs": t, "epochs": e, "out": str(folder)})
            for folder, t, e in zip(folders, targets, epochs, strict=True)
        ]

    def run(self, cell: Cell) -> dict[str, Any]:
        paths = []
        for folder, values in self.members(cell):
            if read_result(folder / "result.json") is None:
                resume = (folder / CHECKPOINT).is_file()
                run_training(train_config({**values, "latency": False, "resume": resume}))
            paths.append(str(folder / CHECKPOINT))
        return build_cascade(paths, cell.method_data["calibrate_to"], cell.run_dir, cell.values.get("data_dir"))

    def deployable(self, cell: Cell) -> tuple[torch.nn.Module, dict[str, Any]]:
        # BN unfolded, as every other row is timed (folding speeds a model up, and no other row gets it)
        cascade, spec = load_cascade(cell.run_dir / SPEC, folded=False)
        return cascade, load_member(spec["members"][0]["checkpoint"], folded=False)[2]


class ShallowCascadeMethod(CascadeMethod):
    """``cascade`` with a shallow first member: a ResNet-8 cut out of the cell's dense CIFAR ResNet (``--init``
    cuts it: each stage's first block, each layer's most important channels) at the widest width within half the
    target, trained at the dense model's learning rate. On small inputs a pruned ResNet-20's time does not follow
    its MACs and a ResNet-8's does, so this cascade runs faster than its static twin at batch 1 where the
    two-l1-filter one runs slower (BENCHMARKS, "A shallow first member"). Its budget is the l1-filter row's
    training time: the ResNet-8 trains ``shallow_epochs_per_epoch`` epochs for each epoch the ``cascade`` rule
    gives the small member, since on the 2-core CPU a ResNet-8 (0.625) epoch takes about a third of a ResNet-20
    fine-tune epoch's time (BENCHMARKS, "A shallow first member cut out of the dense model"; in training MACs it
    is 1.5-1.7x the row's)."""

    shallow_model = "resnet8"
    shallow_epochs_per_epoch = 3

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        with torch.device("meta"):  # shapes only
            why = cut_refusal(create_model(cfg.model), create_model(self.shallow_model))
        if why is not None:
            raise ConfigError(f"{self.name}: its first member is a {self.shallow_model} cut out of {cfg.model}: {why}")
        # the small member is the ResNet-8 (prepare_cell refuses a target below its narrowest); the big one is
        # l1-filter's
        big, floor = self.member_targets(target)[1], uniform_floor(cost)
        if big < floor:
            raise ConfigError(
                f"{self.name}: target {target} cannot be reached: its big member runs at {big:g} of dense, and "
                f"l1-filter reaches no less than {floor:.3f}; choose >= {floor / 2:.3f}"
            )

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        super().prepare_cell(cell, cfg, cost, data_shape)
        channels, size, classes = data_shape
        small = self.member_targets(cell.target)[0] * cost.dense_macs
        width = width_for_macs(self.shallow_model, small, channels, classes, size)
        cell.method_data["shallow"] = {"model": self.shallow_model, "width": width, "lr": cfg.dense_lr}

    def members(self, cell: Cell) -> list[tuple[Path, dict[str, Any]]]:
        (_, small), big = super().members(cell)
        static = self.static_options(cell.target)  # the shallow member is a plain model: their defaults
        folder = cell.run_dir / "members" / "shallow"
        values = {k: v for k, v in small.items() if k not in static} | cell.method_data["shallow"]
        values |= {"epochs": self.shallow_epochs_per_epoch * small["epochs"], "out": str(folder)}
        return [(folder, values), big]
