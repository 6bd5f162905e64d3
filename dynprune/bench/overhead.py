"""Framework overhead: the Trainer's epoch loop vs a bare PyTorch loop on identical batches, in one run."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..api import build_method
from ..base import ConfigError, check_positive, option
from ..config import parse_cli
from ..data import DATASET_NAMES, load_dataset, subset
from ..engine import RunFolder, Trainer
from ..loader import BatchLoader
from ..models import create_model, list_models
from ..optim import OptimSettings, make_optimizer
from ..track import Tracker


def compare_loops(
    model_name: str,
    dataset: str,
    batch_size: int,
    steps: int,
    repeats: int,
    threads: int,
    gates: tuple[str, ...] = (),
) -> dict[str, float]:
    """Median seconds per step of each loop; the loops alternate so machine noise hits all of them alike.

    ``bare`` is a plain PyTorch loop, ``dynprune`` the Trainer with the dense method, and one entry per gate
    estimator the Trainer with gates (budget loss included).
    """
    torch.set_num_threads(threads)
    data = load_dataset(dataset, download=False)
    arrays = subset(data.train, batch_size * steps)
    shape = (data.in_channels, data.image_size, data.image_size)
    times: dict[str, list[float]] = {"bare": [], "dynprune": [], **{g: [] for g in gates}}
    for _ in range(repeats):
        times["bare"].append(_bare_epoch(model_name, data, arrays, batch_size, shape) / steps)
        times["dynprune"].append(_trainer_epoch(model_name, data, arrays, batch_size, shape, "none") / steps)
        for gate in gates:
            times[gate].append(_trainer_epoch(model_name, data, arrays, batch_size, shape, gate) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def _model(name: str, data, shape):
    torch.manual_seed(0)
    model = create_model(name, data.in_channels, data.num_classes, data.image_size)
    return model.to(memory_format=torch.channels_last)


def _bare_epoch(name, data, arrays, batch_size, shape) -> float:
    model = _model(name, data, shape)
    opt = make_optimizer(model, 0.1, 0.9, 5e-4)
    loader = BatchLoader(arrays, data, batch_size, train=True, channels_last=True)
    started = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - started


def _trainer_epoch(name, data, arrays, batch_size, shape, gate: str) -> float:
    model = _model(name, data, shape)
    method = build_method({"gate": gate, "target_macs": 0.5}, recipe=False)
    model = method.prepare(model, shape).to(memory_format=torch.channels_last)
    loader = BatchLoader(arrays, data, batch_size, train=True, channels_last=True)
    with tempfile.TemporaryDirectory() as tmp:
        optim = OptimSettings(1, 0.1, 0.9, 5e-4, 0.1, "onecycle", 0.0)
        folder = RunFolder(Path(tmp), {}, {}, Tracker("disabled", "", Path(tmp), {}))
        trainer = Trainer(model, method, loader, loader, optim, folder, progress=False)
        started = time.perf_counter()
        trainer._train_epoch(0)  # the per-step loop only: validation and checkpointing are per epoch
        return time.perf_counter() - started


@dataclass
class OverheadBenchConfig:
    """python -m dynprune.bench overhead: the model, data and loops to time."""

    model: str = option("resnet20", "zoo model (or package.module:callable)")
    dataset: str = option("fashion-mnist", "data set (read from disk: nothing is downloaded)")
    batch_size: int = option(128, "training batch size")
    steps: int = option(60, "steps per timed epoch")
    repeats: int = option(3, "timed epochs of each loop (the median counts)")
    threads: int = option(2, "torch CPU threads")
    gates: list[str] = option(["gumbel", "ste"], "gate estimators to time too ('' for none)")

    def validate(self) -> None:
        from ..gates.estimators import ESTIMATORS

        self.gates = [g for g in self.gates if g]  # --gates '': the dense loops only
        if ":" not in self.model and self.model not in list_models():  # package.module:callable: checked when built
            raise ConfigError(
                f"--model got {self.model!r}; known: {', '.join(list_models())}, or package.module:callable"
            )
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"--dataset got {self.dataset!r}; known: {', '.join(DATASET_NAMES)}")
        for gate in self.gates:
            if gate not in ESTIMATORS:
                raise ConfigError(f"--gates got {gate!r}; allowed: {', '.join(ESTIMATORS.names())}")
        check_positive(self, "batch_size", "steps", "repeats", "threads")


def cli(argv: Sequence[str]) -> int:
    """Time the dynprune Trainer against a bare PyTorch loop on the same model, data and batches."""
    args = parse_cli(OverheadBenchConfig, argv, "python -m dynprune.bench overhead", cli.__doc__)

    gates = tuple(args.gates)
    rows = compare_loops(args.model, args.dataset, args.batch_size, args.steps, args.repeats, args.threads, gates)
    print(f"{'loop':<12}{'median s/step':>15}{'images/s':>12}")
    for name, seconds in rows.items():
        print(f"{name:<12}{seconds:>15.4f}{args.batch_size / seconds:>12.0f}")
    print(f"overhead: dynprune / bare = {rows['dynprune'] / rows['bare']:.3f}")
    for gate in gates:
        print(f"gated step time: {gate} / dense = {rows[gate] / rows['dynprune']:.3f}")
    return 0
