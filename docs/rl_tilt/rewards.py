"""The search's reward (validation top-1 after adaptive BN, agents.evaluate) of every tilted strategy.

usage: python docs/rl_tilt/rewards.py DENSE_CKPT STRATEGY_DIR
"""

import json
import sys
from pathlib import Path

import torch

from agents.evaluate import EvalSettings, StrategyEvaluator


def main() -> None:
    torch.set_num_threads(1)
    evaluator = StrategyEvaluator(sys.argv[1], settings=EvalSettings())
    for spec in sorted(Path(sys.argv[2]).glob("t*-m*.json")):
        print(spec.stem, f"{evaluator.accuracy(json.loads(spec.read_text())['ratios']):.2f}")


if __name__ == "__main__":
    main()
