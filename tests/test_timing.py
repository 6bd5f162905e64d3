"""Honest timing: rounds until the figures agree, the spread beside every figure, and a flag where it is wide."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from dynprune.timing import interleaved_timing, measure_latency, relative_spread, round_ratio


class SimulatedClock:
    """Seconds that pass only when a model "runs": the timing logic sees exactly the durations the test sets, so no
    scheduler delay of a loaded machine can change the verdicts (real sleeps made this test flaky under load)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeper(nn.Module):
    """A forward that takes ``base`` seconds of the simulated ``clock``, and ``burst`` seconds more during the slow
    half of every ``period`` (with a random phase): a machine where other work comes and goes."""

    def __init__(
        self, clock: SimulatedClock, base: float, burst: float = 0.0, period: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__()
        self.clock, self.base, self.burst, self.period = clock, base, burst, period
        self.phase = random.Random(seed).random() * period
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slow = self.burst and ((self.clock.now + self.phase) % self.period) < self.period / 2
        self.clock.now += self.base + (self.burst if slow else 0.0)
        return x


def test_a_model_slowed_in_bursts_is_flagged_unstable_and_a_steady_one_is_not():
    x, clock = torch.zeros(1), SimulatedClock()
    models = {
        "steady": Sleeper(clock, 0.01),
        "disturbed": Sleeper(clock, 0.002, burst=0.01, period=0.5, seed=1),
    }
    # 6 rounds of 2 x 0.05 s span two periods: the disturbed model is caught in both its phases
    timed, rounds = interleaved_timing(models, x, threads=1, min_run_time=0.3, min_rounds=6, max_rounds=12, clock=clock)
    assert timed["steady"].stable and timed["steady"].spread == pytest.approx(0.0, abs=1e-9)
    assert timed["steady"].ms == pytest.approx(10.0)
    assert not timed["disturbed"].stable and timed["disturbed"].spread > 0.10
    assert timed["disturbed"].rounds == len(rounds["disturbed"]) >= 6  # it kept trying before giving up
    assert min(rounds["disturbed"]) == pytest.approx(2.0) and max(rounds["disturbed"]) == pytest.approx(12.0)


def test_settled_figures_stop_after_the_minimum_rounds():
    clock = SimulatedClock()
    models = {"a": Sleeper(clock, 0.001)}
    timed, _ = interleaved_timing(models, torch.zeros(1), threads=1, min_run_time=0.15, clock=clock)
    assert timed["a"].rounds == 3 and timed["a"].stable


def test_round_ratio_cancels_a_round_that_slowed_everything():
    rounds = {"dense": [10.0, 100.0, 10.0, 10.0], "pruned": [5.0, 50.0, 5.0, 5.0]}
    assert round_ratio(rounds, "dense", "pruned") == 2.0
    assert relative_spread([10.0, 10.0, 10.0, 10.0]) == 0.0
    assert relative_spread([10.0, 12.0]) == 2.0 / 11.0  # two rounds: range / median


def test_measure_latency_records_spread_and_verdict():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    out = measure_latency(model, (1, 16, 16), (1, 4), threads=1, min_run_time=0.1)
    assert out["b1"] > 0 and out["b4"] > 0
    assert out["b1_spread"] >= 0.0 and out["b4_spread"] >= 0.0
    assert isinstance(out["stable"], bool)


def _row(method: str, target: float, stable: bool | None) -> dict:
    return {
        "method": method, "family": "x", "target": target, "seed": 0, "top1": 90.0, "macs_ratio": target,
        "macs_p99_ratio": target, "params": 1000, "latency_b1_ms": 2.0, "latency_b64_ms": 30.0,
        "speedup_b64": 1.5, "realization_b64": 0.75, "latency_stable": stable, "run_dir": "x",
    }  # fmt: skip


def test_comparison_report_flags_a_latency_that_never_settled():
    from dynprune.compare.report import format_report

    rows = [_row("dense", 1.0, True), _row("l1-filter", 0.5, False), _row("global-filter", 0.5, True)]
    report = format_report("t", rows, [0.5])
    flagged = [line for line in report.splitlines() if "(!)" in line and line.startswith("|")]
    assert len(flagged) == 1 and flagged[0].startswith("| l1-filter |")
    assert "2.00 (!) | 30.0 (!)" in flagged[0]
    older = format_report("t", [_row("dense", 1.0, None), _row("l1-filter", 0.5, None)], [0.5])
    assert "(!) |" not in older  # results written before the verdict existed are not flagged
