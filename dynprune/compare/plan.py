"""The comparison's plan: one cell per (method, MAC target, seed), each a normal run folder, all validated before
anything is trained (unknown method, unreachable target, missing or mismatched checkpoint: one clear error)."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, TrainConfig, build
from ..cost import CostModel
from ..data import DataSplits, load_dataset
from ..engine import load_checkpoint
from ..models import create_model
from ..prune.ratios import keep_fractions, solve_uniform_for_macs
from .config import CompareConfig
from .methods import COMPARE_METHODS, CompareMethod, width_for_macs

RL_MAX_RATIO = 0.8  # agents.search's default --r-max: the most the search may remove at one site


@dataclass
class Cell:
    method: str
    target: float  # MAC target (1.0 for the dense model)
    seed: int
    run_dir: Path
    values: dict[str, Any]  # TrainConfig values of the cell's training run
    search_args: list[str] = field(default_factory=list)  # rl: arguments of python -m agents.search
    external: bool = False  # the given dense checkpoint's own folder: read, never trained or written
    estimate_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.method} @ {self.target:.2f} seed {self.seed}"

    @property
    def done(self) -> bool:
        return (self.run_dir / "result.json").is_file()


def _method(name: str) -> CompareMethod:
    if name not in COMPARE_METHODS:
        raise ConfigError(f"methods: unknown method {name!r}; known: {', '.join(COMPARE_METHODS.names())}")
    return COMPARE_METHODS[name]


def _arch(cfg: CompareConfig, data: DataSplits) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "width": 1.0,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
    }


def _check_target(method: CompareMethod, cost: CostModel, target: float) -> None:
    if method.name in ("l1-filter", "global-filter", "sfp"):
        solve_uniform_for_macs(cost, target)  # raises ConfigError naming the reachable floor
    elif method.family == "rl":
        floor = cost.macs(keep_fractions(cost, dict.fromkeys(cost.site_widths, RL_MAX_RATIO))) / cost.dense_macs
        if target < floor:
            raise ConfigError(f"rl: target {target} is below {floor:.3f}, what the search reaches at ratio 0.8")
    elif method.family == "dynamic":
        floor = cost.macs(dict.fromkeys(cost.site_widths, 0.0)) / cost.dense_macs
        if target <= floor + 0.01:
            raise ConfigError(f"{method.name}: target {target} is at or below the gated floor {floor:.3f}")


def build_plan(cfg: CompareConfig) -> list[Cell]:
    methods = [_method(name) for name in cfg.methods]
    if any(m.family == "rl" for m in methods) and importlib.util.find_spec("agents") is None:
        raise ConfigError("methods: rl needs the agents package (install the project with its rl extra)")
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_size)
    shape = (data.in_channels, data.image_size, data.image_size)
    dense_model = create_model(cfg.model, data.in_channels, data.num_classes, data.image_size)
    cost = CostModel.from_model(dense_model, shape)
    if cfg.dense is not None:
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
    for method in sorted(methods, key=lambda m: m.family != "dense"):  # dense first: the others start from it
        for target in cfg.targets if method.uses_target else [1.0]:
            for seed in cfg.seeds:
                cells.append(_cell(cfg, method, target, seed, base, cost, data, out))
    n_train = len(data.train) if cfg.train_subset <= 0 else cfg.train_subset
    _estimate(cfg, cells, dense_model, shape, data.num_classes, n_train)
    return cells


def dense_checkpoint(cfg: CompareConfig, seed: int) -> Path:
    return Path(cfg.dense) if cfg.dense else cfg.run_dir / "dense" / f"s{seed}" / "checkpoint.pt"


def _cell(cfg, method, target, seed, base, cost, data, out) -> Cell:
    if method.family == "dense":
        run_dir = Path(cfg.dense).parent if cfg.dense else out / "dense" / f"s{seed}"
    else:
        _check_target(method, cost, target)
        run_dir = out / method.name / f"t{target:g}" / f"s{seed}"
    values = {**base, **method.overrides(cfg, target), "seed": seed, "out": str(run_dir)}
    if method.from_dense:
        values["init"] = str(dense_checkpoint(cfg, seed))
    if method.family == "compact":
        dense_macs = cost.dense_macs * target
        values["width"] = width_for_macs(
            values["model"], dense_macs, data.in_channels, data.num_classes, data.image_size
        )
    build(TrainConfig, values)  # every field checked now, before any cell trains
    search_args: list[str] = []
    if method.family == "rl":
        search = run_dir / "search"
        values["ratios"] = str(search / "policy.json")
        search_args = [
            *("--algo", cfg.search_algo, "--init", values["init"], "--target-macs", str(target)),
            *("--episodes", str(cfg.search_episodes), "--val-subset", str(cfg.search_val_subset)),
            *("--seed", str(seed), "--out", str(search), "--wandb", cfg.wandb, "--threads", str(cfg.cell_threads)),
            *("--baselines", "none", "--no-progress"),
        ]
        if cfg.search_episodes <= 1:
            search_args += ["--warmup-episodes", "0"]
        else:
            search_args += ["--warmup-episodes", str(max(1, cfg.search_episodes // 4))]
    external = method.family == "dense" and cfg.dense is not None
    return Cell(method.name, target, seed, run_dir, values, search_args, external)


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


# Training cost of a family relative to the dense model's step (gates add their small networks and budget terms).
FAMILY_COST = {"dense": 1.0, "static": 1.0, "rl": 1.0, "dynamic": 1.2, "compact": 1.0}
# Work after training, in passes over the validation split: test set, latency (all); gated budget calibration
# (a bisection of ~12 val passes); the global-unstructured sparsity solve (a mask per candidate).
FAMILY_EXTRA_VAL_PASSES = {"dense": 3.0, "static": 3.0, "rl": 3.0, "dynamic": 15.0, "compact": 3.0}


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
        family = COMPARE_METHODS[cell.method].family
        per_image = dense_per_image
        if family == "compact":
            net = create_model(cell.values["model"], shape[0], num_classes, shape[-1], width=cell.values["width"])
            per_image = _seconds_per_image(net, shape, batch)
        eval_pass = cfg.val_size * per_image / 3  # forward only: about a third of a training step
        epoch_s = n_train * per_image * FAMILY_COST[family] + eval_pass
        cell.estimate_s = cell.values["epochs"] * epoch_s + FAMILY_EXTRA_VAL_PASSES[family] * eval_pass
        if family == "rl":  # each strategy: adaptive BN (8 x 128 images) and the val subset, forward only
            cell.estimate_s += cfg.search_episodes * (1024 + cfg.search_val_subset) * per_image / 3 * cell.target


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
