from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import DATA, DATA_FLAGS, DATASET

# One torch thread per test under the two xdist workers (two workers x two threads on two cores spend their time
# contending: the deep zoo models took 3x their idle time); two when the tests run in one process (-n 0).
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads())
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with those threads: a CLI's main() run in this process (export's sets its --threads,
    2 by default) or a run with ``threads=2`` would otherwise leave its count to every later test of the worker."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def data_root() -> Path:
    return DATA


@pytest.fixture(scope="session")
def data_flags() -> tuple[str, ...]:
    """The CLI flags that select the tests' real data (full Fashion-MNIST or the shipped sample)."""
    return DATA_FLAGS


@pytest.fixture(scope="session")
def fmnist(data_root: Path):
    from dynprune.data import load_dataset

    return load_dataset(DATASET, data_root, download=False)
