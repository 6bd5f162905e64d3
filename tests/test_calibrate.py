"""The budget calibration's shift search: right answer, few validation passes."""

from __future__ import annotations

import itertools
import math

import pytest

from dynprune.gates.calibrate import find_logit_shift, two_stage_shift


def ratio_curve(centre: float, slope: float, steps: int | None = None):
    """A MAC ratio as trained gates give it: monotone, sigmoid-like in the shift, optionally quantised to what
    a validation split of ``steps`` images can resolve."""

    def ratio_at(shift: float) -> float:
        value = 0.05 + 0.9 / (1 + math.exp(-slope * (shift - centre)))
        return round(value * steps) / steps if steps else value

    return ratio_at


def plain_bisection_passes(ratio_at, target: float, tolerance: float, bound: float = 20.0) -> int:
    """The search this one replaced (bisection over [-bound, 0] or [0, bound]), counted in passes."""
    passes, ratio = 1, ratio_at(0.0)
    lo, hi = (-bound, 0.0) if ratio > target else (0.0, bound)
    while abs(ratio - target) > tolerance and passes < 25:
        shift = (lo + hi) / 2
        ratio, passes = ratio_at(shift), passes + 1
        lo, hi = (lo, shift) if ratio > target else (shift, hi)
    return passes


CASES = list(itertools.product([-3.0, -1.0, 0.4, 2.5], [0.7, 2.0, 5.0], [0.1, 0.25, 0.5], [None, 5000]))


@pytest.mark.parametrize(("centre", "slope", "target", "steps"), CASES)
def test_shift_meets_the_target_in_few_passes(centre, slope, target, steps):
    ratio_at = ratio_curve(centre, slope, steps)
    found = find_logit_shift(ratio_at, target, tolerance=0.005)
    assert abs(found.ratio - target) <= 0.005
    assert found.ratio == ratio_at(found.shift)
    assert found.passes <= 11, found


def test_fewer_passes_than_the_plain_bisection_overall():
    ours = theirs = 0
    for centre, slope, target, steps in CASES:
        ratio_at = ratio_curve(centre, slope, steps)
        ours += find_logit_shift(ratio_at, target, tolerance=0.005).passes
        theirs += plain_bisection_passes(ratio_at, target, 0.005)
    print(f"passes over {len(CASES)} curves: {ours} (bracket + Illinois) vs {theirs} (bisection from +-20)")
    assert ours < 0.75 * theirs


def test_unreachable_target_gives_the_closest_shift_and_stops():
    ratio_at = ratio_curve(0.0, 1.0)  # never below 0.05
    found = find_logit_shift(ratio_at, 0.01, tolerance=0.005, bound=20.0)
    assert found.shift == -16.0 or found.shift <= -8.0  # the far end of the grown bracket
    assert found.ratio == pytest.approx(0.05, abs=1e-3) and found.passes <= 8


def test_already_on_target_costs_one_pass():
    found = find_logit_shift(ratio_curve(0.0, 1.0), 0.5, tolerance=0.005)
    assert (found.shift, found.passes) == (0.0, 1)


class FakeLoader:
    """Ten eval batches; each batch's MAC curve is the same sigmoid shifted a little (batches differ)."""

    device = "cpu"

    def __init__(self, batches: int = 10) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return iter(range(self.batches))


def test_two_stage_search_spends_most_passes_on_the_subset():
    full_passes = 0

    def ratio_on(loader, shift: float) -> float:
        nonlocal full_passes
        batches = list(loader)
        full_passes += len(batches) == 10
        curves = [ratio_curve(-2.0 + 0.05 * b, 2.0, 512) for b in batches]
        return sum(curve(shift) for curve in curves) / len(curves)

    found, subset_passes = two_stage_shift(ratio_on, FakeLoader(), 0.25, 0.005)
    assert abs(found.ratio - 0.25) <= 0.005 and found.ratio == ratio_on(FakeLoader(), found.shift)
    assert subset_passes >= 3 and found.passes <= 3 and full_passes - 1 == found.passes
    small, none = two_stage_shift(ratio_on, FakeLoader(2), 0.25, 0.005)  # nothing to gain from a subset
    assert none == 0 and abs(small.ratio - 0.25) <= 0.005


@pytest.mark.parametrize(("after", "warned"), [(60.0, True), (87.0, False)])
def test_a_calibration_that_costs_accuracy_is_called_out(capsys, after, warned):
    from dynprune.gates.fit_budget import warn_if_costly

    warn_if_costly((88.8, after), "layer3.0.conv1 open 0.34 for a density of 0.25")
    out = capsys.readouterr().out
    assert ("warning: the budget calibration cost 28.8 points" in out) == warned
    assert ("layer3.0.conv1 open 0.34" in out) == warned


@pytest.mark.parametrize(("ratio", "side"), [(0.27, "above"), (0.13, "below")])
def test_a_calibration_off_its_target_is_called_out_with_the_cause(capsys, ratio, side):
    from dynprune.gates.fit_budget import warn_off_target

    warn_off_target(ratio, 0.25)
    out = capsys.readouterr().out
    assert f"val MACs {ratio:.3f}x, {side} the target 0.25" in out and "--gate-reduction" in out


@pytest.mark.parametrize("density", ["global", "uniform"])
def test_calibration_records_validation_top1_around_it(tmp_path, density):
    from helpers import tiny_config

    from dynprune.runner import run_training

    result = run_training(tiny_config(tmp_path / "r", gate="ste", target_macs=0.5, gate_density=density, epochs=1))
    calibration = result["budget_calibration"]
    assert 0 <= calibration["val_top1_before"] <= 100 and 0 <= calibration["val_top1_after"] <= 100
    assert calibration["val_top1_before"] == pytest.approx(result["val_top1"])  # the last epoch's, as trained
    if density == "global":  # met or not, the record says which
        met = abs(calibration["val_macs_ratio_after"] - 0.5) <= 0.005
        assert calibration["target_met"] == met
