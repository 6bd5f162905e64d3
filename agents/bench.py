"""python -m agents.bench --init runs/dense/checkpoint.pt: seconds per strategy evaluation, and where they go.

Scores random budget-meeting strategies (not cached) the way the search does and prints the median time of the
three parts: slicing the dense model, adaptive BN, and the validation pass.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dynprune.base import ConfigError, check_non_negative, check_target_macs, option
from dynprune.config import parse_cli

from .config import ScoringOptions
from .env import ChannelPruningEnv
from .evaluate import EvalSettings, StrategyEvaluator

PROG = "python -m agents.bench"


@dataclass
class EvalBenchConfig(ScoringOptions):
    """python -m agents.bench: the checkpoint, and the evaluations timed on it."""

    init: str | None = option(None, "dense checkpoint; required")
    target_macs: float = option(0.5, "MACs of every strategy / dense MACs")
    strategies: int = option(10, "random strategies timed")
    threads: int = option(0, "torch threads (0 = default)")

    def validate(self) -> None:
        if self.init is None:
            raise ConfigError("--init is required: the dense checkpoint (e.g. runs/dense/checkpoint.pt)")
        check_target_macs(self.target_macs)
        self.validate_scoring()
        if self.strategies < 1:
            raise ConfigError(f"--strategies must be >= 1, got {self.strategies}")
        check_non_negative(self, "threads")


def random_strategies(env: ChannelPruningEnv, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    strategies = []
    for _ in range(n):
        env.reset()
        for _ in env.order:
            env.step(np.array([rng.uniform(-1, 1)], dtype=np.float32))
        strategies.append(dict(env.ratios))
    return strategies


def time_evaluations(evaluator: StrategyEvaluator, strategies: list[dict[str, float]]) -> dict[str, float]:
    runs = []
    for ratios in strategies:
        timings: dict[str, float] = {}
        evaluator.accuracy(ratios, timings)
        runs.append(timings)
    return {name: statistics.median(t[name] for t in runs) for name in runs[0]}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(EvalBenchConfig, argv, PROG, __doc__)
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = StrategyEvaluator(args.init, settings=EvalSettings.of(args))
    env = ChannelPruningEnv(evaluator=evaluator, target_macs=args.target_macs)
    strategies = random_strategies(env, args.strategies, seed=0)
    medians = time_evaluations(evaluator, strategies)
    print(
        f"{evaluator.arch['model']} on {evaluator.dataset}, {args.val_subset} val images, "
        f"{args.calib_batches}x{evaluator.settings.calib_batch_size} BN images, {torch.get_num_threads()} threads, "
        f"{args.strategies} random strategies at {args.target_macs} MACs"
    )
    for name, seconds in medians.items():
        print(f"  {name:<12} {seconds:7.3f} s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
