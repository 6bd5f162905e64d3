"""python -m agents.bench --init runs/dense/checkpoint.pt: seconds per strategy evaluation, and where they go.

Scores random budget-meeting strategies (not cached) the way the search does and prints the median time of the
three parts: slicing the dense model, adaptive BN, and the validation pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import numpy as np
import torch

from .env import ChannelPruningEnv
from .evaluate import EvalSettings, StrategyEvaluator


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
    parser = argparse.ArgumentParser(prog="python -m agents.bench", description=__doc__)
    parser.add_argument("--init", required=True, help="dense checkpoint")
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--val-subset", type=int, default=2000)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = StrategyEvaluator(args.init, settings=EvalSettings(args.val_subset, args.calib_batches))
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
