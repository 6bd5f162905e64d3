"""Shared helpers for the tests: tiny training configs on procedural data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from dynprune.catalog import train_config
from dynprune.config import TrainConfig
from dynprune.data import BUNDLED_ROOT, ENV_VAR

REPO = Path(__file__).resolve().parents[1]
# Real data: the full Fashion-MNIST where $DYNPRUNE_DATA holds it, else the sample shipped in the package (7,000
# real images), so the tests run on any machine, with or without a data folder or a network. Subprocesses inherit
# $DYNPRUNE_DATA, and the sample needs no folder, so ``--dataset`` alone selects the data in a CLI.
_FULL = Path(os.environ.get(ENV_VAR) or "/nonexistent")
FULL_DATA = (_FULL / "fashion-mnist").is_dir()
DATASET = "fashion-mnist" if FULL_DATA else "fashion-mnist-sample"
DATA = _FULL if FULL_DATA else BUNDLED_ROOT
DATA_FLAGS = ("--dataset", DATASET)

TINY = dict(
    model="lenet5",
    dataset="synthetic",
    epochs=2,
    batch_size=64,
    train_subset=640,
    val_size=500,
    wandb="disabled",
    latency=False,
    threads=1,
    lr=0.05,
    # the dynamism passes (3 extra evaluations per gated run) are tested in test_dynamism.py; elsewhere they
    # would only add minutes to CI
    measure_dynamism=False,
)
TINY_RESNET = dict(model="resnet20", width=0.5)
QUICK_TIMING = ("--threads", "1", "--min-run-time", "0.05")  # benchmark CLIs: a fast timing, not a figure


def tiny_config(out: Path, **overrides: object) -> TrainConfig:
    """A run of a few seconds: small subset of the synthetic data set, no latency, no wandb."""
    return train_config({**TINY, "out": str(out), **overrides})


def run_module(module: str, *args: str, timeout: int = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m module args`` in a subprocess, as a user would run it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class SmallResidual(torch.nn.Module):
    """A model outside the zoo (sites from the dependency graph): one gated site b -> c inside a residual."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c, self.bn_c = nn.Conv2d(16, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_a(self.a(x)).relu()
        x = x + self.bn_c(self.c(self.bn_b(self.b(x)).relu()))
        return self.head(x.mean(dim=(2, 3)))


def small_gated_residual(estimator: str = "topk") -> torch.nn.Module:
    """``SmallResidual`` with dependency-graph sites and random, tie-free gates at half of its channels (eval)."""
    from dynprune.gates import GatedMethod
    from dynprune.models.depgraph import attach_dependency_sites

    torch.manual_seed(0)
    model = attach_dependency_sites(SmallResidual(), (3, 16, 16))
    model = GatedMethod(estimator, 0.5, calibrate=False).prepare(model, (3, 16, 16)).eval()
    for gate in model.gate_set.gates.values():
        torch.nn.init.normal_(gate.fc2.weight, std=2.0)
        torch.nn.init.normal_(gate.fc2.bias, std=0.01)
    return model


def randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (in place), so that BN folding is really tested."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def train_main(args: list[str], capsys: Any) -> tuple[int, str]:
    """(exit status, stderr) of ``python -m dynprune.train args`` run as its main() in this process (the
    parsing and its errors are all in it; a subprocess per case only adds interpreter start-up)."""
    from dynprune.train import main

    try:
        code = main(["--wandb", "disabled", *args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err
