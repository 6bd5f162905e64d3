from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_RESNET, tiny_config, train_main
from torch import nn

import dynprune
from dynprune.config import ConfigError, TrainConfig
from dynprune.cost import flop_counter_macs
from dynprune.gates import ESTIMATORS, GatedMethod, GateOptions, create_estimator
from dynprune.gates.estimators.gumbel import GumbelOptions
from dynprune.gates.estimators.hardconcrete import HardConcreteOptions
from dynprune.models import create_model, list_models
from dynprune.optim import make_optimizer, make_schedule
from dynprune.prune.criteria import CRITERIA
from dynprune.runner import run_training
from dynprune.sites import slice_site

REPO = Path(__file__).resolve().parents[1]
SIZES = {"resnet18": 64}


def gated(name: str, gate: str = "gumbel", target: float = 0.5, **options):
    torch.manual_seed(0)
    size = SIZES.get(name, 32)
    model = create_model(name, 3, 10, size)
    method = GatedMethod(gate, target, GateOptions(**options))
    model = method.prepare(model, (3, size, size))
    method.begin(100, 10)
    return model, method, (3, size, size)


@pytest.mark.parametrize("gate", ESTIMATORS.names())
def test_gradients_reach_every_gate_parameter(gate):
    model, method, shape = gated("resnet20", gate)
    model.train()
    logits = model(torch.randn(8, *shape))
    extra, logs = method.extra_loss(model, logits, step=50, epoch=5)
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (8,)))
    (loss if extra is None else loss + extra).backward()
    for name, p in model.gate_set.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert 0 < logs["macs_ratio"] <= 1.01


def test_ste_forward_is_exactly_binary_and_gumbel_hard_too():
    logits = torch.randn(64, 32, requires_grad=True)
    for name in ESTIMATORS.names():  # every estimator's training forward is hard 0/1, with a gradient
        out = create_estimator(name).decide(logits, True, 0.5)
        assert set(out.unique().tolist()) <= {0.0, 1.0}, name
        out.sum().backward()
        assert logits.grad.abs().sum() > 0
        logits.grad = None
    soft = create_estimator("gumbel", GumbelOptions(gate_hard=False)).decide(logits, True, 1.0)
    assert ((soft > 0) & (soft < 1)).any()


def test_gumbel_without_noise_trains_on_the_eval_decisions():
    torch.manual_seed(0)
    logits = torch.randn(256, 32)
    gumbel = create_estimator("gumbel")
    gumbel.noise = 0.0
    assert torch.equal(gumbel.decide(logits, True, 1.0), (logits >= 0).float())
    gumbel.noise = 1.0
    noisy = gumbel.decide(logits, True, 1.0)
    assert 0.05 < (noisy != (logits >= 0).float()).float().mean() < 0.5  # the noise flips some decisions


def test_gate_noise_fades_to_zero_over_the_last_fraction_of_the_run():
    gumbel = create_estimator("gumbel", GumbelOptions(noise_fade=0.25, tau_start=1.0, tau_end=0.5))
    noise = []
    for progress in (0.0, 0.5, 0.75, 0.875, 1.0):
        gumbel.schedule(progress)
        noise.append(gumbel.noise)
    assert noise == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert gumbel.tau == pytest.approx(0.5)  # tau_end at the last step
    steady = create_estimator("gumbel")
    steady.schedule(0.999)
    assert steady.noise == 1.0


def test_topk_keeps_exactly_each_sites_k_on_every_sample():
    model, method, shape = gated("resnet20", "topk", target=0.4)
    x = torch.randn(16, *shape)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            model(x)
        for site, mask in model.gate_set.masks.items():
            k = model.gate_set.fixed_keep(site)
            assert torch.equal(mask.sum(dim=1), torch.full((16,), float(k))), site
    ratio = method.cost.macs_from_masks(model.gate_set.masks) / method.dense_macs
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio))  # every sample costs the same
    assert 0.35 < ratio[0].item() <= 0.4


@pytest.mark.parametrize("gate", ESTIMATORS.names())
def test_eval_is_deterministic_threshold(gate):
    model, _method, shape = gated("resnet20", gate)
    model.eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        a = model(x)
        masks_a = {k: v.clone() for k, v in model.gate_set.masks.items()}
        b = model(x)
    assert torch.equal(a, b)
    for k, v in model.gate_set.masks.items():
        assert torch.equal(v, masks_a[k])
        logits = model.gate_set.logits[k]
        expected = (logits >= 0).float()
        if model.gate_set.estimator.fixed_count:  # the k highest logits
            keep = model.gate_set.fixed_keep(k)
            expected = torch.zeros_like(logits).scatter_(1, logits.topk(keep, dim=1).indices, 1.0)
        tiers = model.gate_set.tiers(k)
        if tiers is not None:  # nested widths: tier t open iff logits 1..t are all >= 0
            leading = torch.tensor([next((i for i, z in enumerate(row) if z < 0), len(row)) for row in logits])
            expected = (tiers[None, :] <= leading[:, None]).float()
        assert torch.equal(v[:, :: v.shape[1] // expected.shape[1]], expected)


@pytest.mark.parametrize("name", [n for n in list_models() if n != "resnet110"])
def test_all_open_gates_equal_dense_model(name):
    torch.manual_seed(0)
    size = SIZES.get(name, 32)
    dense = create_model(name, 3, 10, size).eval()
    model, _method, shape = gated(name)
    model.load_state_dict(dense.state_dict(), strict=False)
    model.eval()
    model.gate_set.force_open = True
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(model(x), dense(x), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg11", "lenet5"])
def test_reported_per_sample_macs_equal_counted_macs_of_sliced_model(name):
    """The method's per-sample MACs = FlopCounterMode on the model physically sliced to that sample's masks,
    plus the gates' own MACs."""
    model, method, shape = gated(name, "ste")
    model.eval()
    for gate in model.gate_set.gates.values():  # random gates: about half open, different per sample
        torch.nn.init.normal_(gate.fc2.weight, std=1.0)
        torch.nn.init.zeros_(gate.fc2.bias)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        model(x)
    method.start_eval()
    reported = method.per_sample_macs(model, 3)
    masks = {k: v.clone() for k, v in model.gate_set.masks.items()}
    gate_macs = method.cost.dense_macs - method.dense_macs
    assert gate_macs > 0
    checked = 0
    for b in range(3):
        if any(m[b].sum() == 0 for m in masks.values()):
            continue  # a fully closed site cannot be sliced to zero width; the formula tests cover it
        plain = create_model(name, 3, 10, shape[-1])
        for site in plain.channel_sites():
            slice_site(plain, site, masks[site.name][b].nonzero().flatten())
        checked += 1
        assert reported[b].item() == pytest.approx(flop_counter_macs(plain, shape) + gate_macs, rel=1e-9)
    assert checked > 0 and reported.min() < method.dense_macs


def tiny(tmp_path: Path, **kw) -> TrainConfig:
    gated = dict(epochs=4, train_subset=1280, val_size=500, lr=0.1, gate="gumbel", target_macs=0.5)
    return tiny_config(tmp_path / "run", **{**TINY_RESNET, **gated, **kw})


# The quick tier trains the two estimators no other quick test trains end to end (hardconcrete, width); gumbel
# (test_end_of_run, the dense-checkpoint start below), ste (test_density's per-site budget, the gated CLI run) and
# topk (test_dynamism's guided run, test_user_model's gated own model) are trained there, so their budget-and-learning
# runs (10-14 CPU s each) are in the slow tier
QUICK_BUDGET = {"hardconcrete", "width"}


@pytest.mark.parametrize(
    "gate", [g if g in QUICK_BUDGET else pytest.param(g, marks=pytest.mark.slow) for g in ESTIMATORS.names()]
)
def test_budget_is_met_on_synthetic_task(tmp_path, gate):
    result = run_training(tiny(tmp_path, gate=gate))
    assert abs(result["macs_ratio"] - 0.5) <= 0.03, result["macs_ratio"]
    assert result["top1"] > 50.0
    assert result["gate"] == gate
    assert set(result["site_open_rates"]) == {f"layer{i}.{j}.conv1" for i in (1, 2, 3) for j in range(3)}
    assert result["macs_p50"] > 0 and result["macs_p99"] >= result["macs_p50"] and result["macs_std"] >= 0
    assert len(result["macs_per_class"]) == 10
    assert (tmp_path / "run" / "gates.png").stat().st_size > 10_000


def test_dense_checkpoint_initialises_gated_run(tmp_path):
    dense = run_training(tiny(tmp_path / "d", gate="none", epochs=1))
    assert dense["method"] == "dense"
    ckpt = str(tmp_path / "d" / "run" / "checkpoint.pt")
    result = run_training(tiny(tmp_path / "g", epochs=1, init=ckpt))
    assert result["method"] == "gumbel"


def test_target_below_gate_floor_is_refused():
    with pytest.raises(ConfigError, match="below what gates can reach"):
        gated("mobilenetv2", target=0.02)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--gate", "softmax"], f"--gate got 'softmax'; known: {', '.join(['none', *ESTIMATORS.names()])}"),
        (["--gate", "ste", "--target-macs", "1.5"], "--target-macs must be in (0, 1], got 1.5"),
        (["--gate", "ste", "--target-macs", "0"], "--target-macs must be in (0, 1], got 0.0"),
        (["--gate", "gumbel", "--tau-end", "-1"], "--tau-end must be > 0"),
    ],
)
def test_gate_cli_errors(capsys, args, needle):
    # train's main() in this process (the parsing and its refusals are all in it; a subprocess per case only adds
    # interpreter start-up): the gated CLI run below and test_train's smoke run go through ``python -m``
    code, stderr = train_main(args, capsys)
    assert code == 2, stderr
    assert needle in stderr and "Traceback" not in stderr


def test_gate_group_that_does_not_divide_sites_is_refused(tmp_path, capsys):
    args = ["--gate", "ste", "--gate-groups", "5", "--dataset", "synthetic", "--out", str(tmp_path / "x")]
    code, stderr = train_main(args, capsys)  # main() in this process, as above
    assert code == 2 and "--gate-groups 5 must divide every site width" in stderr, stderr


def test_gate_groups_share_one_decision():
    model, _method, shape = gated("resnet20", "ste", gate_groups=4)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, *shape))
    for mask in model.gate_set.masks.values():
        grouped = mask.view(2, -1, 4)
        assert torch.equal(grouped, grouped[:, :, :1].expand_as(grouped))


def test_result_json_of_gated_cli_run(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynprune.train",
            "--gate",
            "ste",
            "--model",
            "lenet5",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--train-subset",
            "640",
            "--val-size",
            "500",  # not the default 5,000: a validation pass and the budget calibration's passes over it
            "--threads",
            "1",  # one per test, as conftest sets (two threads beside the other xdist worker only contend)
            "--out",
            str(out),
            "--wandb",
            "disabled",
            "--no-latency",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "ste" and set(result["site_open_rates"]) == {"conv1", "conv2"}
    sets = result["site_channel_sets"]  # how dynamic the gates were on the test images
    assert set(sets) == {"conv1", "conv2"} and all(
        v["distinct"] >= 1 and 0 < v["top_share"] <= 1 for v in sets.values()
    )
    assert result["dynamic_sites"] == sum(v["distinct"] > 1 for v in sets.values())


def test_channel_set_counter_counts_distinct_sets_and_the_top_share():
    from dynprune.gates.sets import ChannelSetCounter

    counter = ChannelSetCounter()
    same = torch.tensor([[1.0, 0, 1, 0]] * 3)  # one set for every input: static
    mixed = torch.tensor([[1.0] * 9 + [0.0], [1.0] * 9 + [0.0], [0.0] * 9 + [1.0]])  # 10 channels: 2 bytes
    counter.add({"a": same, "b": mixed})
    counter.add({"a": same[:1], "b": mixed[2:]})
    assert counter.summary() == {"a": {"distinct": 1, "top_share": 1.0}, "b": {"distinct": 2, "top_share": 0.5}}
    counter.reset()
    assert counter.summary() == {}


def test_val_macs_ratio_and_result_macs_ratio_share_one_denominator(tmp_path):
    """Gates held open (no budget, huge bias): every sample costs dense + gates, in validation and test alike,
    so the last epoch's val_macs_ratio must equal result.json's macs_ratio (both over the plain dense MACs)."""
    cfg = tiny(
        tmp_path,
        gate="ste",
        epochs=1,
        gate_bias_init=50.0,
        budget_weight=0.0,
        balance_weight=0.0,
        calibrate_budget=False,
        target_macs=0.9,
    )
    result = run_training(cfg)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["macs_ratio"] > 1.0  # the gates' own MACs on top of the dense model's
    assert last["val_macs_ratio"] == pytest.approx(result["macs_ratio"], rel=1e-12)


def test_hardconcrete_budget_counts_the_probability_of_its_hard_decision():
    torch.manual_seed(0)
    logits = torch.randn(4096, 8) * 2
    estimator = create_estimator("hardconcrete")
    sample = estimator.decide(logits, True, 1.0)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    expected = estimator.cost_mask(logits, sample)
    assert torch.allclose(expected, torch.sigmoid(logits))
    assert abs(sample.mean().item() - expected.mean().item()) < 0.01  # the sampled open rate matches P(open)
    soft = create_estimator("hardconcrete", HardConcreteOptions(hc_hard=False)).decide(logits, True, 1.0)
    assert (soft == 0).any() and (soft == 1).any() and ((soft > 0) & (soft < 1)).any()  # stretched and clamped


def test_gates_train_at_their_own_learning_rate_and_decay():
    """--gate-lr-scale / --no-gate-weight-decay: the gate layers get lr x scale and no decay; every other
    parameter keeps the run's split, and each trainable parameter is in exactly one group."""
    model, method, _ = gated("resnet20", "topk", gate_lr_scale=4.0, gate_weight_decay=False)
    optimizer = make_optimizer(model, 0.05, 0.9, 5e-4, method.param_groups())
    gate_ids = {id(p) for p in method.gate_set.parameters()}
    assert gate_ids
    seen: list[int] = []
    for group in optimizer.param_groups:
        ids = [id(p) for p in group["params"]]
        seen += ids
        is_gate = {i in gate_ids for i in ids}
        assert len(is_gate) == 1  # a group holds gate parameters only or none
        if is_gate == {True}:
            assert group["lr"] == pytest.approx(0.2) and group["weight_decay"] == 0.0
        else:
            assert group["lr"] == pytest.approx(0.05)
    assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert len(seen) == len(set(seen))
    plain_model, plain, _ = gated("resnet20", "topk")
    assert plain.param_groups() == [] and len(make_optimizer(plain_model, 0.05, 0.9, 5e-4).param_groups) == 2


def test_scaled_gate_groups_follow_the_one_cycle_schedule():
    model, method, _ = gated("resnet20", "topk", gate_lr_scale=10.0)
    optimizer = make_optimizer(model, 0.05, 0.9, 5e-4, method.param_groups())
    make_schedule(optimizer, "onecycle", 100, 0)
    lrs = sorted({round(g["lr"], 8) for g in optimizer.param_groups})
    assert lrs == [pytest.approx(0.005), pytest.approx(0.05)]  # onecycle starts at max_lr / 10 in every group


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_reaches_the_gates_start_by_name(name):
    """``--gate-criterion NAME``: gates started on ``--gate-init l1`` open exactly the channels that criterion
    ranks highest, for every registered criterion."""
    from dynprune.prune.criteria import ChannelGroup, make_criterion

    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    for module in model.modules():  # distinct BN scales: no ties for the BN-scale criterion
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.1, 2.0)
    reference = copy.deepcopy(model)
    dynprune.gate(model, (1, 28, 28), "topk", target_macs=0.5, gate_init="l1", gate_criterion=name)
    rank = make_criterion(name)
    for site in model.gate_set.sites:
        gate = model.gate_set.gate(site.name)
        opened = (gate.fc2.bias > 0).nonzero().flatten()
        scores = rank(ChannelGroup.of(reference, site))
        assert set(opened.tolist()) == set(scores.argsort(descending=True, stable=True)[: len(opened)].tolist())


def test_width_gates_order_channels_by_the_gate_criterion():
    from dynprune.prune.criteria import ChannelGroup, make_criterion

    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    for module in model.modules():  # BN scales unlike the filters' norms
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.1, 2.0)
    dynprune.gate(model, (1, 28, 28), "width", target_macs=0.5, gate_criterion="slim-filter")
    for site in model.gate_set.sites:
        scale = make_criterion("slim-filter")(ChannelGroup.of(model, site))
        assert torch.equal(scale, scale.sort(descending=True).values), site.name  # widest-first by |gamma|
