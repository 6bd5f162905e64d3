"""Gates that decide per input: the dynamism measures (conditional share, class spread, frozen-gate ablation) and
the losses that keep gates conditional (activation guide, per-gate rate term), on hand-made values and on a run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import TINY_RESNET, randomize_bn, small_gated_residual, tiny_config

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.config import ConfigError
from dynprune.gates.beta import BetaPrior, beta_cdf_values
from dynprune.gates.dynamism import class_spread, conditional_share, frozen_sets, measure_dynamism
from dynprune.gates.guide import activity_targets, batch_shaping_loss, gate_rate_loss, guide_loss
from dynprune.runner import run_training
from dynprune.sites import SiteMask

SITE = "b"  # the one gated site of helpers.SmallResidual


def _batches(seed: int, n: int = 4, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 16, 16, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def _macs_ratio(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(iter(masks.values())).float().mean(dim=1)  # any per-sample figure: the ablation keeps its mean


def test_conditional_share_counts_channels_neither_always_on_nor_off():
    rates = torch.tensor([0.0, 0.005, 0.5, 0.995, 1.0, 0.02])
    assert conditional_share(rates) == pytest.approx(2 / 6)  # 0.5 and 0.02; 0.005 and 0.995 are "always"


def test_class_spread_is_the_mean_std_across_classes():
    class_rates = torch.tensor([[1.0, 0.5], [0.0, 0.5], [0.3, 0.3]])
    sizes = torch.tensor([5.0, 5.0, 0.0])  # the third class was never seen: left out
    assert class_spread(class_rates, sizes) == pytest.approx((0.5 + 0.0) / 2)


def test_frozen_sets_take_the_mean_count_of_most_often_open_groups():
    rates = {"s": torch.tensor([0.2, 0.9, 0.9, 0.5, 0.0])}  # mean open count 2.5 -> 2 (round half to even)
    assert frozen_sets(rates)["s"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    rates = {"s": torch.tensor([0.9, 0.6, 0.2, 0.9])}  # 2.6 -> 3: ties broken by the lower index
    assert frozen_sets(rates)["s"].tolist() == [1.0, 1.0, 0.0, 1.0]


def test_nested_widths_freeze_to_the_nearest_width_they_were_trained_at():
    tiers = {"s": torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])}  # choices of 2, 8 groups (0.25, 1)
    narrow_most = torch.tensor([1.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3])  # mean open count 3.8: 2 is nearer
    assert frozen_sets({"s": narrow_most}, tiers)["s"].tolist() == [1.0, 1.0] + [0.0] * 6
    assert frozen_sets({"s": narrow_most})["s"].tolist() == [1.0] * 4 + [0.0] * 4  # channel gates: 4, untrained
    halfway = torch.tensor([1.0, 1.0] + [0.5] * 6)  # 5 open: as near to 2 as to 8, the wider wins
    assert frozen_sets({"s": halfway}, tiers)["s"].tolist() == [1.0] * 8
    assert frozen_sets({"s": narrow_most}, {"s": None})["s"].tolist() == [1.0] * 4 + [0.0] * 4


def test_gates_that_open_one_set_for_every_input_gain_exactly_nothing():
    model = small_gated_residual("topk")
    with torch.no_grad():
        model.gate_set.gate(SITE).fc2.weight.zero_()  # logits = bias: the same channels for every input
    fields, class_rates = measure_dynamism(model, model.gate_set, _batches(1), _batches(2), 10, _macs_ratio)
    assert fields["dynamic_gain"] == 0.0
    assert fields["static_ablation_top1"] == fields["dynamism_top1"]
    assert fields["conditional_share"] == 0.0 and fields["site_class_spread"][SITE] == 0.0
    assert class_rates[SITE].shape == (10, 16)


def test_frozen_gate_ablation_equals_a_hand_computed_figure():
    """The gates of the small residual model decide per input (random, large gate weights); the ablation is
    recomputed here by hand: val open counts -> the k most open channels -> a static mask with the gates held
    open -> test accuracy."""
    model = small_gated_residual("topk")
    gate_set = model.gate_set
    val = _batches(1)
    with torch.no_grad():  # labels: the gated model's own predictions, so any prediction the ablation changes counts
        test = [(x, model(x).argmax(1)) for x, _ in _batches(2, n=8)]
    fields, _ = measure_dynamism(model, gate_set, val, test, 10, _macs_ratio)
    with torch.no_grad():
        counts = torch.zeros(16)
        for x, _ in val:
            model(x)
            counts += gate_set.masks[SITE].sum(dim=0)
        rates = counts / sum(len(y) for _, y in val)
        k = round(rates.sum().item())
        order = sorted(range(16), key=lambda c: (-rates[c].item(), c))
        fixed = torch.zeros(16)
        fixed[order[:k]] = 1.0

        def accuracy() -> float:
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
            return 100.0 * correct / sum(len(y) for _, y in test)

        dynamic = accuracy()
        gate_set.force_open = True
        static_mask = SiteMask(model, next(s for s in gate_set.sites if s.name == SITE), fixed)
        static = accuracy()
        static_mask.remove()
        gate_set.force_open = False
    assert ((rates > 0) & (rates < 1)).any()  # the gates really change their decision between inputs
    assert dynamic != static  # and the fixed set changes predictions: a figure that can tell the two apart
    assert fields["dynamism_top1"] == pytest.approx(dynamic)
    assert fields["static_ablation_top1"] == pytest.approx(static)
    assert fields["dynamic_gain"] == pytest.approx(dynamic - static)
    assert fields["site_conditional_share"][SITE] > 0
    assert not gate_set.fixed_decisions  # the model decides per input again afterwards
    after, _ = measure_dynamism(model, gate_set, val, test, 10, _macs_ratio)
    assert after == fields


def test_activity_targets_keep_each_inputs_most_active_channels():
    activity = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 1.0, 4.0]])
    targets = activity_targets(activity, 0.5)
    assert targets.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]  # per row: different inputs, sets
    kept_mass = (targets * activity).sum(dim=1)
    assert kept_mass.tolist() == [5.0, 9.0]  # the most activation mass any 2 channels of the row hold


def test_guide_loss_is_lower_for_logits_that_agree_with_the_targets():
    activity = {"s": torch.tensor([[3.0, 1.0, 2.0, 0.0]])}
    agree = {"s": torch.tensor([[4.0, -4.0, 4.0, -4.0]])}
    disagree = {"s": -agree["s"]}
    assert guide_loss(agree, activity, {"s": 0.5}) < 0.05 < guide_loss(disagree, activity, {"s": 0.5})


def test_gate_rate_term_is_zero_at_the_target_rate_and_grows_away_from_it():
    half = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # every channel open for half the batch
    static = torch.tensor([[1.0, 0.0]] * 4)  # the same half of the channels open for every input
    always = torch.ones(4, 2)

    def loss(masks: torch.Tensor, density: float) -> float:
        return gate_rate_loss({"s": masks.mean(dim=0)}, {"s": density}).item()  # open rate per gate over the batch

    assert loss(half, 0.5) == 0.0
    assert loss(static, 0.5) == pytest.approx(0.25)  # (1-.5)^2 and (0-.5)^2
    assert loss(always, 0.25) == pytest.approx(0.75**2)
    assert loss(half, 0.25) < loss(half, 0.1)


@pytest.mark.parametrize(
    "bad",
    [
        {"gate_pool": 0.5},
        {"gate_pool_min": 1.5},
        {"guide_until": 1.5},
        {"guide_open_epochs": -0.5},
        {"gate_rate_weight": -1.0},
        {"gate_shape_weight": -1.0},
        {"gate_shape_until": 0.0},
        {"gate_usage_weight": -1.0},
        {"gate_usage_floor": 0.0},
        {"gate_usage_share": 1.5},
        {"gate_lr_scale": 0.0},
    ],
)
def test_bad_guide_options_are_one_clear_error(tmp_path, bad):
    with pytest.raises(ConfigError):
        tiny_config(tmp_path / "r", gate="topk", **bad)


def test_guided_pool_run_records_dynamism_that_describes_the_saved_model(tmp_path):
    cfg = tiny_config(
        tmp_path / "r",
        **TINY_RESNET,
        gate="topk",
        target_macs=0.5,
        gate_init="pool",
        guide_weight=1.0,
        guide_open_epochs=0.5,
        budget_warmup_epochs=0.0,
        measure_dynamism=True,
    )
    result = run_training(cfg)
    assert set(result["site_conditional_share"]) == set(result["site_open_rates"])
    assert 0 <= result["conditional_share"] <= 1
    assert result["dynamism_top1"] == pytest.approx(result["top1"])  # the same model, the same test split
    assert result["dynamic_gain"] == pytest.approx(result["top1"] - result["static_ablation_top1"])
    assert result["static_ablation_macs_ratio"] == pytest.approx(result["macs_ratio"], abs=0.02)
    assert (tmp_path / "r" / "gate_classes.png").stat().st_size > 0
    history = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == cfg.epochs  # per epoch, on the validation pass: how dynamic the gates were then
    assert all(0 <= row["cost/conditional_share"] <= 1 for row in history)
    assert set(result["site_open_rates"]) == {
        k.removeprefix("cost/conditional/") for k in history[-1] if "conditional/" in k
    }
    model, _, _ = rebuild_from_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert not model.gate_set.fixed_decisions and not model.gate_set.force_open


@pytest.mark.parametrize(
    ("init", "extra", "tiers"),
    [
        ("l1", {}, {2.0: 4, -2.0: 12}),  # exactly l1-filter's k = 4 of 16
        ("pool", {"gate_pool": 1.5}, {2.0: 6, -2.0: 10}),  # 1.5 x k candidates, equal biases
        ("pool", {"gate_pool": 1.5, "gate_pool_min": 0.5}, {2.0: 8, -2.0: 8}),  # at least half the site's 16
        ("l1", {"gate_pool_min": 0.5}, {2.0: 4, -2.0: 12}),  # l1 opens exactly k: no pool to widen
        ("core", {"gate_pool": 2.0, "gate_core": 0.5}, {2.0: 2, 0.0: 6, -2.0: 8}),  # 2 held, 6 undecided
    ],
)
def test_gate_starts_from_the_l1_ranking(init, extra, tiers):
    from dynprune.gates import GatedMethod, GateOptions
    from dynprune.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28)
    method = GatedMethod("topk", 0.25, GateOptions(gate_init=init, gate_density="uniform", **extra))
    method.prepare(model, (1, 28, 28))
    site = "layer1.0.conv1"  # 16 channels
    density = method.densities[site]
    assert round(density * 16) == 4
    bias = model.gate_set.gate(site).fc2.bias.detach()
    assert {v: (bias == v).sum().item() for v in tiers} == tiers
    order = (
        model.layer1[0].conv1.weight.detach().flatten(1).abs().sum(1).argsort(descending=True)
    )  # the higher a channel's norm, ...
    assert (bias[order].diff() <= 0).all()  # ... the higher its starting bias


def _boosted(gate: str, name: str = "resnet20"):
    from dynprune.gates import GatedMethod, GateOptions
    from dynprune.models import create_model

    torch.manual_seed(0)
    model = create_model(name, 3, 10, 32)
    method = GatedMethod(gate, 0.5, GateOptions(gate_boost=True))
    model = method.prepare(model, (3, 32, 32))
    randomize_bn(model)
    for g in model.gate_set.gates.values():
        torch.nn.init.normal_(g.fc2.weight, std=1.0)
        torch.nn.init.constant_(g.fc2.bias, 0.0)
        if g.boost is not None:
            torch.nn.init.normal_(g.boost.weight, std=1.0)  # scales far from 1, different per input
    return model.eval(), method


@pytest.mark.parametrize("gate", ["ste", "topk"])
def test_feature_boosting_deploys_exactly_in_every_strategy(gate):
    from dynprune.gates.deploy import to_deploy

    model, method = _boosted(gate)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        scales = torch.cat([g.scale.flatten() for g in model.gate_set.gates.values()])
        assert scales.std() > 0.1  # the boost really scales channels, differently per input
        for g in model.gate_set.gates.values():  # the same decisions without the boost: the test can tell them apart
            g.boost.weight.zero_()
        plain = model(x)
    assert (plain - reference).abs().max() > 1e-2
    model, method = _boosted(gate)
    deploy = method.deploy_model(model)
    with torch.no_grad():
        reference = model(x)
        for strategy in (*deploy.candidates(), "auto"):
            deploy.strategy = strategy
            assert (deploy(x) - reference).abs().max().item() < 1e-4, strategy
            assert (deploy(x[:1]) - reference[:1]).abs().max().item() < 1e-4, strategy
    assert ("fixedk" in deploy.candidates()) == (gate == "topk")
    assert to_deploy(model) is not None


def test_feature_boosting_leaves_sites_with_channel_wise_layers_unboosted_and_deploys_exactly():
    model, method = _boosted("topk", "mobilenetv2")
    sites = {s.name: s for s in model.gate_set.sites}
    assert model.gate_set.unboosted == [name for name, s in sites.items() if s.passthrough]
    assert all((model.gate_set.gate(n).boost is None) == bool(s.passthrough) for n, s in sites.items())
    deploy = method.deploy_model(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        for strategy in deploy.candidates():
            deploy.strategy = strategy
            assert (deploy(x) - reference).abs().max().item() < 1e-4, strategy


def test_gates_held_open_or_guided_to_the_end_run_as_trained_after_training():
    from dynprune.gates import GatedMethod, GateOptions
    from dynprune.models import create_model

    model = create_model("resnet20", 1, 10, 28, width=0.25)
    method = GatedMethod("topk", 0.5, GateOptions(guide_weight=1.0, guide_open_epochs=50.0, guide_until=1.0))
    model = method.prepare(model, (1, 28, 28))
    method.begin(total_steps=20, steps_per_epoch=10)  # held open longer than the run lasts
    method.before_step(model, 19)
    assert model.gate_set.force_open and model.gate_set.capture_activity
    method.finalize(model, None, None)
    assert not model.gate_set.force_open and not model.gate_set.capture_activity
    with torch.no_grad():
        model.eval()(torch.randn(3, 1, 28, 28))
    assert all(m.sum(dim=1).lt(m.shape[1]).all() for m in model.gate_set.masks.values())  # gates cut again


def _gated_for_loss_terms(gate: str, **options):
    """A small gated ResNet-20 in train mode, begun for a 10-step run: what the loss-term tests step through."""
    from dynprune.gates import GatedMethod, GateOptions
    from dynprune.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.25)
    method = GatedMethod(gate, 0.5, GateOptions(gate_init="open", **options))
    model = method.prepare(model, (1, 28, 28))
    method.begin(total_steps=10, steps_per_epoch=10)
    model.train()
    return model, method


def test_the_rate_term_joins_the_loss_of_a_training_step_and_reaches_the_gates():
    model, method = _gated_for_loss_terms("ste", gate_rate_weight=1.0, gate_density="uniform")
    method.before_step(model, 5)
    out = model(torch.randn(8, 1, 28, 28))
    loss, logs = method.extra_loss(model, out, step=5, epoch=0)
    rates = {s: m.float().mean(dim=0) for s, m in model.gate_set.cost_masks.items()}
    expected = torch.cat([(r - method.densities_at(5)[s]) ** 2 for s, r in rates.items()]).mean()
    assert logs["rate_loss"] == pytest.approx(expected.item())
    loss.backward()
    assert any(
        g.fc2.weight.grad is not None and g.fc2.weight.grad.abs().sum() > 0 for g in model.gate_set.gates.values()
    )


@pytest.mark.parametrize(
    ("a", "b", "exact"),
    [
        (0.5, 0.5, lambda x: 2 / math.pi * torch.asin(torch.sqrt(x))),  # the arcsine distribution
        (0.3, 1.0, lambda x: x**0.3),
        (1.0, 0.2, lambda x: 1 - (1 - x) ** 0.2),
        (1.0, 1.0, lambda x: x),
    ],
)
def test_beta_cdf_equals_its_closed_forms_and_the_table_follows_it(a, b, exact):
    x = torch.tensor([1e-6, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999], dtype=torch.float64)
    values = beta_cdf_values(x, torch.tensor(a), torch.tensor(b))
    torch.testing.assert_close(values, exact(x), atol=1e-7, rtol=1e-6)
    prior = BetaPrior(torch.full((3,), a), torch.full((3,), b))
    tabled = prior.cdf(x.float()[:, None].expand(-1, 3))
    torch.testing.assert_close(tabled, exact(x).float()[:, None].expand(-1, 3), atol=5e-3, rtol=0)


def test_batch_shaping_scores_a_beta_like_batch_lower_than_constant_or_half_open_ones():
    torch.manual_seed(0)
    density = 0.3
    prior = BetaPrior(torch.full((4,), density), torch.full((4,), 1 - density))
    beta_like = torch.distributions.Beta(density, 1 - density).sample((256, 4)).clamp(1e-4, 1 - 1e-4)
    as_logits = {"s": torch.logit(beta_like)}
    always_open = {"s": torch.full((256, 4), 4.0)}
    half_open = {"s": torch.zeros(256, 4)}
    static = {"s": torch.tensor([4.0, -4.0, -4.0, -4.0]).expand(256, 4)}  # one fixed set: 1 of 4 open
    score = {
        name: batch_shaping_loss(v, prior).item()
        for name, v in {"beta": as_logits, "open": always_open, "half": half_open, "static": static}.items()
    }
    assert score["beta"] < 0.01
    assert min(score["open"], score["half"], score["static"]) > 5 * score["beta"]
    logits = torch.zeros(64, 4, requires_grad=True)  # half-open gates: the loss pulls them apart
    batch_shaping_loss({"s": logits}, prior).backward()
    assert logits.grad.abs().sum() > 0


def test_batch_shaping_joins_the_loss_fades_and_reaches_the_gates():
    model, method = _gated_for_loss_terms("topk", gate_shape_weight=2.0, gate_shape_until=0.5)
    method.before_step(model, 2)
    out = model(torch.randn(8, 1, 28, 28))
    loss, logs = method.extra_loss(model, out, step=2, epoch=0)
    sites = [s.name for s in model.gate_set.sites]
    d = torch.cat([torch.full((model.gate_set.gate(s).groups,), method.densities[s]) for s in sites])
    expected = 2.0 * (1 - 2 / 5) * batch_shaping_loss(model.gate_set.logits, BetaPrior(d, 1 - d), sites)
    assert logs["shape_loss"] == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(g.fc2.weight.grad.abs().sum() > 0 for g in model.gate_set.gates.values())
    _, late = method.extra_loss(model, model(torch.randn(8, 1, 28, 28)), step=5, epoch=0)
    assert "shape_loss" not in late  # faded out at half of the run


def test_batch_shaping_stays_finite_when_a_site_keeps_every_channel():
    """Densities of 1 (a policy ratio of 0) made the prior Beta(1, 0): a NaN loss that stopped the run."""
    model, method = _gated_for_loss_terms("topk", gate_shape_weight=1.0)
    first = model.gate_set.sites[0].name
    method.schedule.densities[first] = 1.0
    loss, logs = method.extra_loss(model, model(torch.randn(8, 1, 28, 28)), step=1, epoch=0)
    assert math.isfinite(logs["shape_loss"]) and torch.isfinite(loss)
