"""Can a router that decides before running match l1-filter at 0.25 when its branches are static-quality models?

The width gates' rows lose ~0.5 to l1-filter at 0.25 (BENCHMARKS, "Width gates with twice the fine-tune"): their
branches, slices of one supernet, score below static models of their MACs, and a router is worth +0.1 to +0.5
over a random mix. This script removes the first cost: the branches are two separately fine-tuned l1-filter
models of one dense model (the nested channel prefixes a width gate would pick, each pre-packed), and a tiny
CNN router sees the input only and picks one branch per image, as the width router does. It is trained on the
training images none of the models saw (every run here trained on the first 10,000; ``--router-data seen``:
on those 10,000, the budget the models had), to predict which branch
classifies the image correctly; the share sent to the wide branch is calibrated on validation so that the mean
MACs (router included) equal l1-filter's at the target. Printed, on test: each branch alone, a random mix at
the same share, the router, a router that knows the labels (the bound), and the confidence cascade of the same
branches at the same MACs.

    python docs/width_router/router_bound.py SMALL.pt BIG.pt L1_AT_TARGET.pt [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from dynprune.cascade.measure import member_logits, top1
from dynprune.cascade.model import load_member
from dynprune.cascade.rule import calibrate, confidence, sample_macs
from dynprune.checkpoints import read_result
from dynprune.cost import flop_counter_macs
from dynprune.data import data_of_checkpoint
from dynprune.loader import BatchLoader

SEEN = 10_000  # every run here trained on the first 10,000 training images (--train-subset 10000)


class Router(nn.Module):
    """Three strided convolutions and a two-way head: P(small branch right), P(wide branch right)."""

    def __init__(self, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def images(arrays, data) -> torch.Tensor:
    return torch.cat([x for x, _ in BatchLoader(arrays, data, 500, train=False)])


def train_router(x: torch.Tensor, right: torch.Tensor, epochs: int, seed: int) -> Router:
    torch.manual_seed(seed)
    router = Router(x.shape[1])
    opt = torch.optim.Adam(router.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=epochs * ((len(x) + 255) // 256))
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        router.train()
        order = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), 256):
            idx = order[i : i + 256]
            xb = x[idx]
            if torch.rand(()) < 0.5:
                xb = xb.flip(-1)  # Fashion-MNIST's own augmentation
            loss = loss_fn(router(xb), right[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"  router epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", file=sys.stderr, flush=True)
    return router.eval()


@torch.no_grad()
def scores(router: Router, x: torch.Tensor) -> torch.Tensor:
    p = torch.cat([router(x[i : i + 1000]).sigmoid() for i in range(0, len(x), 1000)])
    return p[:, 1] - p[:, 0]  # how much the wide branch is expected to add


def route_top(score: torch.Tensor, share: float) -> torch.Tensor:
    """Boolean: the ``share`` of inputs with the highest score go wide."""
    k = round(share * len(score))
    wide = torch.zeros(len(score), dtype=torch.bool)
    wide[score.argsort(descending=True)[:k]] = True
    return wide


def routed_top1(logits: torch.Tensor, labels: torch.Tensor, wide: torch.Tensor) -> float:
    chosen = torch.where(wide[:, None], logits[1], logits[0])
    return top1(chosen, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("small")
    ap.add_argument("big")
    ap.add_argument("reference", help="l1-filter's model at the target: its MACs are the budget")
    ap.add_argument("--router-epochs", type=int, default=10)
    ap.add_argument(
        "--router-data",
        choices=("seen", "unseen"),
        default="unseen",
        help="the training images the models saw (the fair budget) or the 48,000 they did not",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    small, r_small, ckpt = load_member(args.small)
    big, r_big, _ = load_member(args.big)
    reference = read_result(Path(args.reference).parent / "result.json")
    budget = reference["macs_ratio"]
    data = data_of_checkpoint(ckpt)
    router_images = data.train.take(slice(SEEN, None) if args.router_data == "unseen" else slice(0, SEEN))
    print(
        f"branches {r_small:.3f}x / {r_big:.3f}x, budget {budget:.3f}x, {len(router_images)} {args.router_data} images",
        file=sys.stderr,
    )

    logits = {
        name: member_logits([small, big], arr, data)
        for name, arr in (("router", router_images), ("val", data.val), ("test", data.test))
    }
    x_router = images(router_images, data)
    right = (logits["router"][0].argmax(-1) == logits["router"][1][None]).T.float()  # [N, 2]
    router = train_router(x_router, right, args.router_epochs, seed=0)
    shape = tuple(x_router.shape[1:])
    r_router = flop_counter_macs(router, shape) / reference["macs_dense"]
    share = (budget - r_router - r_small) / (r_big - r_small)

    out: dict = {
        "branches": [r_small, r_big],
        "budget": budget,
        "router_macs": r_router,
        "wide_share": share,
        "reference_top1": reference["top1"],
        "reference_val_top1": reference.get("val_top1"),
        "router_data": args.router_data,
    }
    val_conf = torch.stack([confidence(v) for v in logits["val"][0]])
    thr = calibrate(val_conf, [r_small, r_big], budget)  # the cascade's threshold, as python -m dynprune.cascade
    for split in ("val", "test"):
        lg, labels = logits[split]
        right_s = (lg[0].argmax(-1) == labels).float()
        right_b = (lg[1].argmax(-1) == labels).float()
        oracle = (right_b - right_s) + 0.001 * torch.rand(len(labels))  # wrong-small-right-wide first
        conf = torch.stack([confidence(lg[0]), confidence(lg[1])])
        stop_small = conf[0] >= thr
        cascade = torch.where(stop_small[:, None], lg[0], lg[1])
        out[split] = {
            "small": top1(lg[0], labels),
            "big": top1(lg[1], labels),
            "random_mix": 100 * ((1 - share) * right_s.mean() + share * right_b.mean()).item(),
            "router": routed_top1(lg, labels, route_top(scores(router, images(getattr(data, split), data)), share)),
            "label_router": routed_top1(lg, labels, route_top(oracle, share)),
            "cascade_same_macs": top1(cascade, labels),
            "cascade_macs": sample_macs(conf, [r_small, r_big], thr).mean().item(),
        }
    out["router_gain_over_random"] = out["test"]["router"] - out["test"]["random_mix"]
    out["router_vs_reference"] = out["test"]["router"] - reference["top1"]
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
