from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import DATA, DATA_FLAGS, DATASET

torch.set_num_threads(min(2, torch.get_num_threads()))


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
