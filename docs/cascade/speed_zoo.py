"""What a two-member cascade costs in wall-clock on zoo models of other sizes, with random weights (time does not
depend on them): l1-filter members at SMALL and BIG of the dense MACs, hard-pruned, BN folded; a share SHARE of
the inputs goes on to the big member (the calibrated 0.25 cascades on Fashion-MNIST send 0.26). Against the
static twin at the cascade's mean MACs (SMALL + SHARE x BIG) and dense, eager PyTorch, interleaved rounds.

Batch 1: 32 inputs one at a time, the first round(SHARE x 32) also through the big member (the confidence of
each is computed as the cascade does). Batch B: one call on B inputs, the first round(SHARE x B) go on.

SMALL may name a shallow dense model instead, MODEL@WIDTH (e.g. resnet8@1.0 in front of resnet56): its MACs count
over MODEL's dense ones (README, "Confidence cascades": members of different models).

usage: python docs/cascade/speed_zoo.py MODEL [SMALL BIG SHARE THREADS BATCH]   e.g. resnet18 0.128 0.5 0.26 2 1
"""

import copy
import sys

import torch

from dynprune.api import static_prune
from dynprune.bench.dynamic import BENCH_SHAPES, DEFAULT_SHAPE
from dynprune.cascade.rule import confidence
from dynprune.cost import CostModel
from dynprune.fold import fold_bn
from dynprune.models import create_model
from dynprune.timing import interleaved_timing, round_ratio

N = 32


def pruned(dense: torch.nn.Module, shape: tuple, target: float) -> tuple[torch.nn.Module, float]:
    pruning = static_prune(copy.deepcopy(dense), shape, "l1-filter", target)
    ratio = pruning.macs_ratio()
    return fold_bn(pruning.remove()).eval(), ratio


def shallow(spec: str, dense: torch.nn.Module, shape: tuple, classes: int) -> tuple[torch.nn.Module, float]:
    """A dense MODEL@WIDTH, BN folded, and its MACs over ``dense``'s."""
    model_name, width = spec.split("@")
    model = create_model(model_name, shape[0], classes, shape[-1], width=float(width)).eval()
    macs = CostModel.from_model(model, shape).dense_macs / CostModel.from_model(dense, shape).dense_macs
    return fold_bn(model).eval(), macs


def main() -> None:
    name = sys.argv[1]
    small_arg = sys.argv[2] if len(sys.argv) > 2 else "0.128"
    big_t, share, threads, batch = [float(a) for a in sys.argv[3:6]] + [int(a) for a in sys.argv[6:7]] or [
        0.5, 0.26, 2, 1]  # fmt: skip
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    shape, classes = BENCH_SHAPES.get(name, DEFAULT_SHAPE)
    dense = create_model(name, shape[0], classes, shape[-1]).eval()
    if "@" in small_arg:
        small, small_r = shallow(small_arg, dense, shape, classes)
    else:
        small, small_r = pruned(dense, shape, float(small_arg))
    big, big_r = pruned(dense, shape, big_t)
    twin, twin_r = pruned(dense, shape, small_r + share * big_r)
    dense = fold_bn(dense).eval()
    go_on = round(share * (N if batch == 1 else batch))

    def cascade_b1(x: torch.Tensor) -> None:
        for i in range(x.shape[0]):
            out = small(x[i : i + 1])
            if i < go_on:  # as if unsure: the confidence is computed either way
                confidence(out)
                big(x[i : i + 1])
            else:
                confidence(out)

    def cascade_batched(x: torch.Tensor) -> None:
        confidence(small(x))
        big(x[:go_on])

    def b1(model: torch.nn.Module):
        return lambda x: [model(x[i : i + 1]) for i in range(x.shape[0])]

    x = torch.randn(N if batch == 1 else batch, *shape)
    calls = {"cascade": cascade_b1 if batch == 1 else cascade_batched}
    models = {"twin": twin, "dense": dense, "small": small, "big": big}
    calls.update({k: b1(m) if batch == 1 else m for k, m in models.items()})
    timed, rounds = interleaved_timing(calls, x, int(threads), min_run_time=2.0, min_rounds=5)
    per = {k: t.ms / x.shape[0] for k, t in timed.items()}
    flag = "" if all(t.stable for t in timed.values()) else " (unstable)"
    print(f"{name} {tuple(shape)}, batch {batch}: small {small_r:.3f}x, big {big_r:.3f}x, share {share}, "
          f"cascade {small_r + share * big_r:.3f}x, twin {twin_r:.3f}x MACs")  # fmt: skip
    print(
        f"ms/input: cascade {per['cascade']:.3f}, twin {per['twin']:.3f}, dense {per['dense']:.3f}, small "
        f"{per['small']:.3f}, big {per['big']:.3f}; twin / cascade {round_ratio(rounds, 'twin', 'cascade'):.2f}, "
        f"dense / cascade {round_ratio(rounds, 'dense', 'cascade'):.2f}{flag}"
    )


if __name__ == "__main__":
    main()
