"""Shared helpers for the tests: tiny training configs on procedural data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
