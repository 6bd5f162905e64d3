"""Framework overhead: the Trainer's epoch loop vs a bare PyTorch loop on identical batches, in one run."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import gates as _gates  # noqa: F401  (registers the gated method)
from .data import BatchLoader, load_dataset, subset
from .engine import Trainer, make_optimizer
from .methods import create_method
from .models import create_model
from .track import Tracker


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
    method = create_method("dense") if gate == "none" else create_method("gated", gate=gate, target_macs=0.5)
    model = method.prepare(model, shape).to(memory_format=torch.channels_last)
    loader = BatchLoader(arrays, data, batch_size, train=True, channels_last=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model,
            method,
            loader,
            loader,
            epochs=1,
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            label_smoothing=0.1,
            schedule="onecycle",
            warmup_epochs=0,
            out_dir=Path(tmp),
            arch={},
            config={},
            tracker=Tracker("disabled", "", Path(tmp), {}),
            progress=False,
        )
        started = time.perf_counter()
        trainer._train_epoch(0)  # the per-step loop only: validation and checkpointing are per epoch
        return time.perf_counter() - started
