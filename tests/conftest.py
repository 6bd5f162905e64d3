from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DYNPRUNE_DATA") or REPO.parent / "shared" / "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "fashion-mnist").is_dir():
        pytest.fail(f"real Fashion-MNIST expected in {DATA}/fashion-mnist (set DYNPRUNE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def fmnist(data_root: Path):
    from dynprune.data import load_dataset

    return load_dataset("fashion-mnist", data_root, download=False)
