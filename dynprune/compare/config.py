"""The comparison's configuration: one data set, one model, methods x MAC targets x seeds, one shared budget."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from dynprune.base import DEFAULT_R_MAX, ConfigError, check_threads, option


@dataclasses.dataclass
class CompareConfig:
    """What ``python -m dynprune.compare --config configs/compare/NAME.yaml`` runs."""

    name: str = option("compare", "name of the comparison (wandb group, default folder runs/compare-<name>)")
    dataset: str = option("fashion-mnist", "data set of every cell")
    model: str = option("resnet20", "zoo model every method prunes")
    dense: str | None = option(None, "trained dense checkpoint; none = train it once in <out>/dense")
    dense_epochs: int = option(9, "epochs of the dense model when it is trained here (and of compact models)")
    dense_lr: float = option(0.2, "peak learning rate of dense and compact training from scratch")
    methods: list[str] = option(
        ["dense", "l1-filter", "global-filter", "sfp", "global-unstructured", "rl", "gumbel", "ste", "narrow"],
        "methods to compare (python -m dynprune.compare --list)",
    )
    targets: list[float] = option([0.3, 0.5, 0.7], "MAC targets (fraction of the dense model's MACs)")
    seeds: list[int] = option([0], "seeds; every cell runs once per seed")
    epochs: int = option(9, "fine-tune/training epochs shared by every method that starts from the dense model")
    lr: float = option(0.05, "peak learning rate of the fine-tunes")
    gate_budget_weight: float | None = option(
        None, "gates: budget-term weight of every threshold estimator's cell (default: each estimator's recipe)"
    )
    distill: bool = option(
        False, "every cell but dense distils from its seed's dense model (--distill), from-scratch cells too"
    )
    train_subset: int = option(0, "train on the first N training images only (0 = all)")
    val_size: int = option(5000, "validation images carved from the training set")
    batch_size: int = option(128, "training batch size")
    search_episodes: int = option(200, "rl: episodes of the policy search")
    search_algo: str = option("ddpg", "rl: search algorithm (python -m agents.search --help)")
    search_val_subset: int = option(2000, "rl: validation images scored per strategy")
    search_criterion: str = option(
        "l1-filter",
        "rl: the criterion the search scores strategies with and the fine-tune prunes by (agents.search --criterion)",
    )
    search_r_max: float = option(DEFAULT_R_MAX, "rl: the largest pruning ratio the search may give a site (--r-max)")
    search_actions: str = option(
        "ratio", "rl: how the search's actions become ratios (agents.search --actions: ratio, AMC's; or centred)"
    )
    threads: int = option(0, "torch CPU threads per cell (0 = torch's default, or cores / workers with --workers)")
    workers: int = option(1, "cells run in parallel processes (each with --threads threads)")
    data_dir: str | None = option(None, "folder holding the data sets (else $DYNPRUNE_DATA, else ./data)")
    out: str | None = option(None, "comparison folder (default runs/compare-<name>)")
    wandb: Literal["offline", "online", "disabled"] = option("offline", "wandb mode of every cell and the summary")
    wandb_project: str = option("dynprune", "wandb project")
    latency: bool = option(True, "measure latency of every cell (batch 1 and 64)")
    latency_seconds: float = option(
        0.3, "seconds of timing per round of each latency figure (--quick: 0.05, a smoke test, not a figure)"
    )
    dry_run: bool = option(False, "print the plan and its estimated time, train nothing")

    @property
    def cell_threads(self) -> int:
        """Threads of each cell: as given, else the cores shared out between the workers (0 = torch's default)."""
        if self.threads or self.workers == 1:
            return self.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.workers)

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/compare-{self.name}")

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("methods: name at least one method")
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise ConfigError(f"targets must be fractions in (0, 1], got {self.targets}")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        check_threads(self.threads)
        for field in ("methods", "targets", "seeds"):  # a repeat would run a cell twice and count it as two seeds
            values = getattr(self, field)
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                raise ConfigError(f"{field}: {', '.join(map(str, repeated))} given more than once; give each once")
        if not 0 < self.search_r_max < 1:
            raise ConfigError(f"search_r_max must be in (0, 1), got {self.search_r_max}")
        if not self.latency_seconds > 0:
            raise ConfigError(f"latency_seconds must be > 0, got {self.latency_seconds}")
        for field in ("epochs", "dense_epochs", "search_episodes", "workers"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{field} must be >= 1, got {getattr(self, field)}")
