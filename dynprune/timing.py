"""Honest latency: models timed in interleaved rounds until their figures agree, with the spread kept beside them.

On a shared machine the speed drifts within seconds, and a burst of other work can make one measurement 100x
too slow (a hard-pruned ResNet-20 was once recorded at 436 ms at batch 1 against 4.9 ms for dense). So every
figure here comes from rounds: each round times every model once (A, B, A, B, ...: drift hits all of them
alike), rounds repeat until each model's round medians agree within ``spread_limit`` or ``time_cap`` is spent,
and a figure whose spread is still wider is flagged ``stable = False`` instead of being written silently.
Ratios between models (speed-ups) are taken per round and then their median, so a disturbance that slows one
round for everyone cancels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: a figure whose round medians spread wider than this (interquartile range / median) is flagged unstable
SPREAD_LIMIT = 0.10


@dataclass(frozen=True)
class Timed:
    """One model's latency: median ms per call over the rounds, the rounds' relative spread, and the verdict."""

    ms: float
    spread: float
    rounds: int
    stable: bool


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range / median (robust to one disturbed round); with fewer than 3 values, range / median."""
    median = statistics.median(values)
    if len(values) < 3:
        return (max(values) - min(values)) / median if median > 0 else 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / median if median > 0 else 0.0


def interleaved_timing(
    models: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    threads: int,
    min_run_time: float,
    min_rounds: int = 3,
    max_rounds: int = 15,
    spread_limit: float = SPREAD_LIMIT,
    time_cap: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, Timed], dict[str, list[float]]]:
    """({name: Timed}, {name: per-round medians in ms}) for every model on ``x``.

    Each round gives every model ``min_run_time / min_rounds`` seconds of ``torch.utils.benchmark`` timing.
    Stops once ``min_rounds`` are done and every spread is within ``spread_limit``, or after ``max_rounds``, or
    when ``time_cap`` seconds (default: 10 x ``min_run_time`` per model) are spent. ``clock`` (seconds) times
    the calls and the cap (a test passes a simulated one: real sleeps race with a loaded machine).
    """
    from torch.utils import benchmark  # here: its import costs every CLI process a few tenths of a second

    cap = time_cap if time_cap is not None else 10 * min_run_time * len(models)
    per_round = min_run_time / min_rounds
    rounds: dict[str, list[float]] = {name: [] for name in models}
    started = clock()
    with torch.no_grad():
        for model in models.values():
            model(x)  # warm-up outside the timer (first call allocates)
        while True:
            for name, model in models.items():
                globs = {"model": model, "x": x}
                timer = benchmark.Timer("model(x)", globals=globs, num_threads=threads, timer=clock)
                rounds[name].append(timer.blocked_autorange(min_run_time=per_round).median * 1e3)
            n = len(next(iter(rounds.values())))
            settled = all(relative_spread(v) <= spread_limit for v in rounds.values())
            if n >= max_rounds or (n >= min_rounds and (settled or clock() - started > cap)):
                break
    timed = {
        name: Timed(statistics.median(v), relative_spread(v), len(v), relative_spread(v) <= spread_limit)
        for name, v in rounds.items()
    }
    return timed, rounds


def round_ratio(rounds: Mapping[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator (e.g. dense / pruned: the speed-up), each pair from one round,
    so a disturbance that slowed a whole round cancels."""
    return statistics.median(a / b for a, b in zip(rounds[numerator], rounds[denominator], strict=True))


def interleaved_latency(
    models: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    threads: int,
    min_run_time: float,
    rounds: int = 5,
) -> dict[str, float]:
    """Median ms per call of each model (the figures of ``interleaved_timing``, without the verdicts)."""
    timed, _ = interleaved_timing(models, x, threads, min_run_time, min_rounds=rounds)
    return {name: t.ms for name, t in timed.items()}


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    min_run_time: float = 0.3,
    channels_last: bool = False,
    inputs: Mapping[int, torch.Tensor] | None = None,
) -> dict[str, float | bool]:
    """Inference latency in ms per batch, keyed ``b1``, ``b64``..., each from rounds that must agree
    (``interleaved_timing``); ``b1_spread``... give their relative spread and ``stable`` says whether every
    figure settled within ``SPREAD_LIMIT`` (a False is a figure not to trust: the machine was busy)."""
    param = next(model.parameters())
    threads = threads or torch.get_num_threads()
    was_training = model.training
    model.eval()
    out: dict[str, float | bool] = {}
    stable = True
    try:
        for b in batch_sizes:
            x = (
                inputs[b]
                if inputs and b in inputs
                else torch.randn(b, *input_shape, device=param.device, dtype=param.dtype)
            )
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            timed, _ = interleaved_timing({"model": model}, x, threads, min_run_time)
            out[f"b{b}"] = timed["model"].ms
            out[f"b{b}_spread"] = round(timed["model"].spread, 4)
            stable = stable and timed["model"].stable
    finally:
        model.train(was_training)
    out["stable"] = stable
    return out
