"""Score a rank check's strategies with candidate rewards that use the dense model as a reference (issue: a reward
that ranks strategies right at 0.1, where top-1 after adaptive BN is near chance for every strategy):

- ``top1_ft0``: the search's default reward (to compare a stand-in dense model with the rank check's own);
- ``kl_ft0``: KL(dense || pruned) of the validation logits after adaptive BN (lower is better);
- ``feat_ft0``: mean squared error of the pooled features against the dense model's, after adaptive BN;
- ``top1_kd100`` / ``kl_kd100``: top-1 and KL after 100 steps of distillation from the dense logits (T = 4, the
  fine-tune's KD form) on the search's fixed training batches, lr 0.01;
- ``top1_ce100x5``: top-1 after 100 plain cross-entropy steps at the fine-tune's lr (0.05) instead of 0.01.

usage: python docs/rank_check/teacher_scores.py DENSE_CKPT RANK_CHECK_JSON OUT_JSON
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agents.evaluate import EvalSettings, StrategyEvaluator, recalibrate_bn
from dynprune.fold import fold_bn

T = 4.0


def features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, logits): the classifier's input is caught by a hook on the last Linear."""
    caught: dict[str, torch.Tensor] = {}

    def catch(module: nn.Module, args: tuple, out: torch.Tensor) -> None:  # None: the output stays as it is
        caught["f"] = args[0]

    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    handle = head.register_forward_hook(catch)
    logits = model(x)
    handle.remove()
    return caught["f"], logits


def tune(model: nn.Module, batches, teacher_logits, lr: float, kd: bool) -> None:
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for (x, y), t in zip(batches, teacher_logits, strict=True):
        out = model(x)
        if kd:
            loss = F.kl_div(F.log_softmax(out / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
        else:
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def measure(model: nn.Module, ev: StrategyEvaluator, dense_val) -> tuple[float, float, float]:
    """(top-1 %, KL to dense, feature MSE) on the validation subset after adaptive BN."""
    recalibrate_bn(model, ev.calib)
    model = fold_bn(model).eval()
    correct = total = 0
    kl = mse = 0.0
    for (x, y), (dense_f, dense_logits) in zip(ev.val, dense_val, strict=True):
        f, out = features(model, x)
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
        kl += float(F.kl_div(F.log_softmax(out, 1), F.log_softmax(dense_logits, 1), log_target=True, reduction="sum"))
        mse += float(((f - dense_f) ** 2).mean(1).sum())
    return 100 * correct / total, kl / total, mse / total


def main() -> None:
    init, checks, out_path = sys.argv[1:4]
    torch.set_num_threads(1)
    ev = StrategyEvaluator(init, settings=EvalSettings(finetune_steps=100))
    with torch.no_grad():
        dense_val = [features(ev.model, x) for x, _ in ev.val]
        teacher = [ev.model(x) for x, _ in ev.tune]
    out = []
    for check in json.loads(Path(checks).read_text())["checks"]:
        for row in check["strategies"]:
            scored = {"target": check["target"], "kind": row["kind"], "ratios": row["ratios"]}
            base = ev.pruned_model(row["ratios"])
            scored["top1_ft0"], scored["kl_ft0"], scored["feat_ft0"] = measure(copy.deepcopy(base), ev, dense_val)
            kd = copy.deepcopy(base)
            tune(kd, ev.tune, teacher, 0.01, kd=True)
            scored["top1_kd100"], scored["kl_kd100"], _ = measure(kd, ev, dense_val)
            ce = copy.deepcopy(base)
            tune(ce, ev.tune, teacher, 0.05, kd=False)
            scored["top1_ce100x5"], _, _ = measure(ce, ev, dense_val)
            out.append(scored)
            Path(out_path).write_text(json.dumps(out))
            print(check["target"], row["kind"], {k: round(v, 3) for k, v in scored.items() if "_" in k})


if __name__ == "__main__":
    main()
