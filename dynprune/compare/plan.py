"""The comparison's plan: one cell per (method, MAC target, seed), each a normal run folder, all validated before
anything is trained (unknown method, unreachable target, missing or mismatched checkpoint: one clear error)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..base import ConfigError
from ..catalog import train_config
from ..checkpoints import load_checkpoint, read_result
from ..cost import CostModel
from ..data import DataSplits, load_dataset
from ..models import create_model
from .cell import Cell
from .config import CompareConfig
from .method_base import CompareMethod
from .methods import cell_method, compare_method


def _arch(cfg: CompareConfig, data: DataSplits) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "width": 1.0,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
    }


def check_finished_dense(checkpoint: Path) -> None:
    """The given dense run's result.json is its row in the report (the reference every ratio is read against):
    an unfinished run would leave the report without it."""
    if checkpoint.is_file() and read_result(checkpoint.parent / "result.json") is None:
        raise ConfigError(
            f"--dense {checkpoint}: its run has not finished (no valid result.json beside it), so the report "
            f"would have no dense row; finish it with python -m dynprune.train --resume --out {checkpoint.parent}"
        )


def build_plan(cfg: CompareConfig) -> list[Cell]:
    methods = [compare_method(name) for name in cfg.methods]
    for method in methods:
        method.check_available()
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_size)
    shape = (data.in_channels, data.image_size, data.image_size)
    dense_model = create_model(cfg.model, data.in_channels, data.num_classes, data.image_size)
    cost = CostModel.from_model(dense_model, shape)
    if cfg.dense is not None:
        check_finished_dense(Path(cfg.dense))
        load_checkpoint(cfg.dense, _arch(cfg, data))  # exists, loads, and holds this model for this data set
    out = cfg.run_dir
    base = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "data_dir": cfg.data_dir,
        "val_size": cfg.val_size,
        "train_subset": cfg.train_subset,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "threads": cfg.cell_threads,
        "wandb": cfg.wandb,
        "wandb_project": cfg.wandb_project,
        "wandb_group": cfg.name,
        "latency": cfg.latency and cfg.workers == 1,  # parallel cells are timed afterwards, one at a time
        "progress": False,
    }
    cells: list[Cell] = []
    for method in sorted(methods, key=lambda m: not m.is_reference):  # dense first: the others start from it
        for target in cfg.targets if method.uses_target else [1.0]:
            for seed in cfg.seeds:
                cells.append(_cell(cfg, method, target, seed, base, cost, data, out))
    _check_dense_source(cfg, methods)
    n_train = len(data.train) if cfg.train_subset <= 0 else cfg.train_subset
    _estimate(cfg, cells, dense_model, shape, data.num_classes, n_train)
    return cells


def _check_dense_source(cfg: CompareConfig, methods: list[CompareMethod]) -> None:
    """A cell that starts from (or learns from) its seed's dense model needs that model: trained in this
    comparison (a reference method among --methods), given (--dense), or already in the run folder."""
    if cfg.dense is not None or any(m.is_reference for m in methods):
        return
    needing = [m.name for m in methods if m.from_dense or cfg.distill]
    missing = [seed for seed in cfg.seeds if not dense_checkpoint(cfg, seed).is_file()]
    if needing and missing:
        why = "start from" if not cfg.distill else "start from or learn from (distill: true)"
        raise ConfigError(
            f"{', '.join(needing)} {why} each seed's dense model, but 'dense' is not among --methods, no --dense "
            f"checkpoint is given and {dense_checkpoint(cfg, missing[0])} does not exist; add dense to --methods "
            "or pass --dense CHECKPOINT"
        )


def dense_checkpoint(cfg: CompareConfig, seed: int) -> Path:
    return Path(cfg.dense) if cfg.dense else cfg.run_dir / "dense" / f"s{seed}" / "checkpoint.pt"


def _cell(
    cfg: CompareConfig,
    method: CompareMethod,
    target: float,
    seed: int,
    base: dict[str, Any],
    cost: CostModel,
    data: DataSplits,
    out: Path,
) -> Cell:
    if method.is_reference:
        run_dir = Path(cfg.dense).parent if cfg.dense else out / "dense" / f"s{seed}"
    else:
        method.check_target(cfg, cost, target)
        run_dir = out / method.name / f"t{target:g}" / f"s{seed}"
    values = {**base, **method.overrides(cfg, target), "seed": seed, "out": str(run_dir)}
    if method.from_dense:
        values["init"] = str(dense_checkpoint(cfg, seed))
    if cfg.distill and not method.is_reference:  # every cell learns from its seed's dense model, from scratch too
        values["distill"] = str(dense_checkpoint(cfg, seed))
    external = method.is_reference and cfg.dense is not None
    cell = Cell(method.name, target, seed, run_dir, values, external=external)
    method.prepare_cell(cell, cfg, cost, (data.in_channels, data.image_size, data.num_classes))
    train_config(cell.values)  # every field checked now (method names and options too), before any cell trains
    return cell


def _seconds_per_image(model: torch.nn.Module, shape: tuple[int, ...], batch_size: int) -> float:
    """One measured training step (forward, backward, update) per image: what every estimate is scaled from."""
    x, y = torch.randn(batch_size, *shape), torch.randint(0, 2, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - started)
    return min(times[1:]) / batch_size


def _estimate(
    cfg: CompareConfig, cells: list[Cell], model: torch.nn.Module, shape, num_classes: int, n_train: int
) -> None:
    """Seconds per cell from measured training steps: the dense model's for every method that trains it, and each
    compact architecture's own (a MobileNetV2 costs far more time per MAC on a CPU than a ResNet)."""
    if cfg.cell_threads:
        torch.set_num_threads(cfg.cell_threads)
    batch = min(cfg.batch_size, 64)
    dense_per_image = _seconds_per_image(model, shape, batch)
    for cell in cells:
        if cell.done or cell.external:
            continue
        method = cell_method(cell)
        per_image = dense_per_image
        if method.own_architecture:
            net = create_model(cell.values["model"], shape[0], num_classes, shape[-1], width=cell.values["width"])
            per_image = _seconds_per_image(net, shape, batch)
        eval_pass = cfg.val_size * per_image / 3  # forward only: about a third of a training step
        epoch_s = n_train * per_image * method.cost_factor + eval_pass
        cell.estimate_s = cell.values["epochs"] * epoch_s + method.extra_val_passes * eval_pass
        cell.estimate_s += method.extra_seconds(cfg, cell, per_image)


def format_plan(cells: list[Cell], workers: int = 1) -> str:
    lines = [f"{'cell':<34}{'epochs':>7}{'estimate':>10}  folder"]
    for cell in cells:
        state = "done" if cell.done else "given" if cell.external else f"{cell.estimate_s / 60:7.1f}m"
        lines.append(f"{cell.label:<34}{cell.values['epochs']:>7}{state:>10}  {cell.run_dir}")
    total = sum(c.estimate_s for c in cells if not c.done)
    summary = f"{len(cells)} cells, {sum(c.done for c in cells)} done; estimated {total / 60:.0f} min to go"
    if workers > 1:
        summary += f" in one process, about {total / workers / 60:.0f} min with {workers} workers"
    lines.append(summary)
    return "\n".join(lines)
