"""Score a rank check's strategies with candidate rewards: top-1 and cross-entropy on the validation subset after
adaptive BN, with 0 / 100 / 300 short SGD steps first (the search's scorer, agents.evaluate).

usage: python docs/rank_check/candidate_scores.py DENSE_CKPT RANK_CHECK_JSON OUT_JSON
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from agents.evaluate import EvalSettings, StrategyEvaluator, recalibrate_bn, short_finetune
from dynprune.fold import fold_bn


def score(ev: StrategyEvaluator, ratios: dict, steps: int) -> tuple[float, float]:
    model = ev.pruned_model(ratios)
    if steps:
        short_finetune(model, ev.tune[:steps], 0.01)
    recalibrate_bn(model, ev.calib)
    model = fold_bn(model).eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in ev.val:
            out = model(x)
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
    return 100 * correct / total, loss / total


def main() -> None:
    init, checks, out_path = sys.argv[1:4]
    torch.set_num_threads(1)
    ev = StrategyEvaluator(init, settings=EvalSettings(finetune_steps=300))
    out = []
    for check in json.loads(Path(checks).read_text())["checks"]:
        for row in check["strategies"]:
            scored = {"target": check["target"], "kind": row["kind"], "ratios": row["ratios"]}
            for steps in (0, 100, 300):
                scored[f"top1_ft{steps}"], scored[f"loss_ft{steps}"] = score(ev, row["ratios"], steps)
            out.append(scored)
            Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
