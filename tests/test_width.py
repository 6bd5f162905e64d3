"""Nested-width gates (``--gate width``): ordinal decisions over tiers of L1-ordered channels, deployed as
prefixes of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dynprune
from dynprune.base import ConfigError
from dynprune.gates.estimators.width import Width, WidthOptions
from dynprune.models import create_model
from dynprune.prune.criteria import ChannelGroup, L1Norm


def test_an_input_opens_the_tiers_up_to_its_first_negative_logit():
    width = Width(WidthOptions(width_choices=[0.25, 0.5, 0.75, 1.0]))  # three logits per site
    logits = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    tiers = width.decide(logits, training=False, density=1.0)
    assert torch.equal(tiers, torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]))
    assert torch.equal(width.tiers(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    opened = width.expand(tiers, 8)
    assert torch.equal(opened.sum(dim=1), torch.tensor([4.0, 8, 2]))  # prefixes of 4, 8 and 2 of 8 groups
    assert torch.equal(opened, (torch.arange(8)[None] < opened.sum(dim=1)[:, None]).float())
    # a site of 3 groups: the 0.25 and 0.5 choices both end after the first group; tier 2 is empty
    assert torch.equal(width.tiers(3), torch.tensor([0, 1, 3]))


def test_training_decisions_are_hard_forward_and_straight_through_backward():
    width = Width(WidthOptions(width_noise_fade=1.0))  # the default choices: 0.125, 0.25, 0.5, 1
    width.schedule(1.0)  # the noise has faded out: the training forward equals the eval decision
    logits = torch.tensor([[2.0, -0.5, 3.0]], requires_grad=True)
    tiers = width.decide(logits, training=True, density=1.0)
    assert torch.equal(tiers.detach(), width.decide(logits.detach(), training=False, density=1.0))
    tiers.sum().backward()
    assert logits.grad is not None and bool((logits.grad != 0).all())  # every logit learns through the product


def random_width_gates(seed: int = 0) -> tuple[nn.Module, dynprune.Gates]:
    torch.manual_seed(seed)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    gates = dynprune.gate(model, (1, 28, 28), "width", target_macs=0.5, width_choices=[0.25, 0.5, 0.75, 1.0])
    for gate in model.gate_set.gates.values():
        nn.init.normal_(gate.fc2.weight, std=2.0)
        nn.init.normal_(gate.fc2.bias, std=1.0)
        gate.bn.running_var.fill_(1e-3)  # hidden units far from zero: the logits differ between inputs
    return model.eval(), gates


def varied_inputs(n: int) -> torch.Tensor:
    """Noise images of different mean brightness: random gates pool them to different features."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 28, 28, generator=generator) + 2 * torch.randn(n, 1, 1, 1, generator=generator)


def test_channels_are_ordered_by_l1_and_every_input_keeps_a_prefix():
    model, _ = random_width_gates(1)
    for site in model.gate_set.sites:
        norms = L1Norm()(ChannelGroup.of(model, site))
        assert bool((norms[:-1] >= norms[1:]).all()), site.name  # the narrowest width keeps the largest filters
    with torch.no_grad():
        model(varied_inputs(32))
    varying = 0
    for mask in model.gate_set.masks.values():
        kept = mask.sum(dim=1)
        assert torch.equal(mask, (torch.arange(mask.shape[1])[None] < kept[:, None]).float())
        varying += len(set(kept.tolist())) > 1
    assert varying >= 5  # at most sites, inputs run different widths (6 of 9 with these gates and inputs)


@pytest.mark.parametrize("strategy", ["gather", "union", "grouped", "masked"])
def test_deploy_runs_prefixes_and_equals_the_masked_model(strategy):
    model, gates = random_width_gates(1)
    x = varied_inputs(16)
    deploy = gates.deploy()
    deploy.strategy = strategy
    with torch.no_grad():
        masked = model(x)
        assert torch.allclose(deploy(x), masked, atol=1e-4)
        for i in range(8):  # batch 1: one width per site
            assert torch.allclose(deploy(x[i : i + 1]), masked[i : i + 1], atol=1e-4)
    convs = [m for m in deploy.modules() if getattr(m, "prefix", False)]
    assert len(convs) == 2 * len(model.gate_set.sites)  # each site's producer and consumer
    # the weights of each width are sliced once and kept (4 widths; a group may name the full width by index)
    assert all(len(c._slices) <= 5 for c in convs)
    if strategy == "gather":  # one sample at a time: the inputs' different widths each have their slices
        assert sum(len(c._slices) > 1 for c in convs) >= 4
    deploy.double()  # the kept slices are of the float weights: moved or cast, they are sliced again
    with torch.no_grad():
        assert torch.allclose(deploy(x[:1].double()), masked[:1].double(), atol=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width_choices": [0.5, 0.25, 1.0]}, "--width-choices must be >= 2 ascending fractions"),
        ({"width_choices": [0.25, 0.5]}, "the last 1"),
        ({"width_gate_label": "ranked"}, "--width-gate-label ranked needs --width-gate-target > 0"),
        ({"width_narrowest_weight": -1.0}, "--width-narrowest-weight must be >= 0"),
        ({"gate_init": "pool"}, "--gate width has one logit per width, not per channel: --gate-init must be open"),
        ({"guide_weight": 1.0}, "--guide-weight must be 0.0"),
        ({"gate_boost": True}, "--gate-boost scales single channels"),
        ({"gate_rate_weight": 1.0}, "--gate-rate-weight must be 0.0"),
        ({"gate_usage_weight": 1.0}, "--gate-usage-weight must be 0.0"),
    ],
)
def test_options_width_gates_cannot_honour_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        dynprune.build_method({"gate": "width", **options})


def test_width_gates_export_to_onnx_and_onnx_runtime_agrees(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, gates = random_width_gates(2)
    exported = gates.export_onnx(tmp_path / "width.onnx", batch=4)
    assert exported.executor == "masked"  # widths differ per input: no fixed shapes
    x = torch.randn(4, 1, 28, 28)
    session = ort.InferenceSession(str(exported.path))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-4)


def test_a_reorder_keeps_sync_batch_norm():
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    before = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    dynprune.gate(model, (1, 28, 28), "width", target_macs=0.5)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == before  # --sync-bn holds


def test_the_cli_refuses_them_before_any_data_is_read(capsys):
    from dynprune.catalog import parse_train_cli

    with pytest.raises(SystemExit) as exc:
        parse_train_cli(["--gate", "width", "--gate-init", "pool"], "python -m dynprune.train", "")
    assert exc.value.code == 2 and "--gate-init must be open" in capsys.readouterr().err


def test_choices_that_leave_no_choice_at_the_target_are_refused():
    """0.25, 0.5, 0.75, 1 at a 0.25 target ran every input at the narrowest width (static): refused now."""
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    with pytest.raises(ConfigError, match="the narrowest width 0.25 is not below the sites' density"):
        dynprune.gate(model, (1, 28, 28), "width", target_macs=0.25, width_choices=[0.25, 0.5, 0.75, 1.0])
    dynprune.gate(create_model("resnet20", 1, 10, 28, width=0.5), (1, 28, 28), "width", target_macs=0.25)  # 0.125..1


LABELS = torch.tensor([0, 1, 2, 3, 4, 5])


def supernet_gates(share: float, random: int = 2, **options) -> tuple[nn.Module, dynprune.Gates]:
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    gates = dynprune.gate(
        model, (1, 28, 28), "width", target_macs=0.5, steps=10, steps_per_epoch=5,
        width_choices=[0.25, 0.5, 0.75, 1.0], width_supernet=share, width_random=random, **options,
    )  # fmt: skip
    return model, gates


def test_the_supernet_phase_holds_every_gate_open_and_distils_the_narrow_widths_from_the_widest():
    model, gates = supernet_gates(0.5)
    gate_set, schedule = model.gate_set, gates.method.schedule
    assert schedule.supernet_steps == 5 and schedule.held_open(4) and not schedule.held_open(5)
    assert schedule.target_at(5) == 1.0 and schedule.target_at(9) < 1.0  # the budget slides once the gates decide
    model.train()
    x = varied_inputs(6)
    gates.step(0)
    widest = model(x)
    assert all(bool((m == 1).all()) for m in gate_set.masks.values())  # the training pass runs the widest
    seen = []
    model.register_forward_hook(lambda *_: seen.append({k: v[0].clone() for k, v in gate_set.masks.items()}))
    loss, logs = gates.method.extra_loss(model, widest, 0, 0, inputs=x, labels=LABELS)
    assert set(logs) == {"sandwich_narrowest", "sandwich_random0", "sandwich_random1"}
    assert loss.item() == pytest.approx(sum(logs.values()), rel=1e-5) and loss.item() > 0
    narrowest = seen[0]  # every site at its first quarter: a prefix
    for site, mask in narrowest.items():
        width = mask.numel()
        assert torch.equal(mask, (torch.arange(width) < width // 4).float()), site
    for masks in seen[1:]:  # random widths: prefixes at one of the choices, per site
        for site, mask in masks.items():
            kept = int(mask.sum())
            assert torch.equal(mask, (torch.arange(mask.numel()) < kept).float())
            assert kept in {round(c * mask.numel()) for c in (0.25, 0.5, 0.75, 1.0)}, site
    assert gate_set.force_open and gate_set.fixed_decisions == {}  # the passes leave the gate set as they found it
    assert all(bool((m == 1).all()) for m in gate_set.masks.values())  # the training pass's masks, not a narrow one's
    loss.backward()
    conv = model.layer1[0].conv1
    assert conv.weight.grad is not None and bool((conv.weight.grad != 0).any())
    gates.step(5)  # the supernet phase is over: the gates decide, and no extra pass runs
    assert not gate_set.force_open
    _, late = gates.method.extra_loss(model, model(x), 5, 1, inputs=x, labels=LABELS)
    assert not any(k.startswith("sandwich") for k in late)


def test_a_width_run_at_the_widest_everywhere_distils_nothing():
    model, gates = supernet_gates(0.5, random=0)
    sandwich = gates.method.sandwich
    model.train()
    x = varied_inputs(4)
    gates.step(0)
    widest = model(x)
    model.gate_set.force_open = False
    model.gate_set.fixed_decisions = {s: sandwich.prefix(s, 3) for s in model.gate_set.densities}
    same = model(x)  # the widest through fixed decisions: the same network
    model.gate_set.fixed_decisions = {}
    soft = torch.softmax(widest.detach(), dim=1)
    from dynprune.gates.sandwich import soft_cross_entropy

    entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1).mean()
    assert soft_cross_entropy(same, soft).item() == pytest.approx(entropy.item(), abs=1e-4)  # KL = 0


def test_bad_supernet_options_are_one_clear_error():
    with pytest.raises(ConfigError, match="--width-supernet"):
        WidthOptions(width_supernet=1.0).validate()
    with pytest.raises(ConfigError, match="--width-random"):
        WidthOptions(width_random=-1).validate()


def test_the_narrow_passes_leave_the_batch_norm_running_statistics_alone():
    model, gates = supernet_gates(0.5)
    model.train()
    x = varied_inputs(6)
    gates.step(0)
    widest = model(x)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    gates.method.extra_loss(model, widest, 0, 0, inputs=x, labels=LABELS)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in norms)  # restored


def test_the_gate_target_asks_for_the_narrowest_width_exactly_where_the_narrowest_network_is_right():
    """DS-Net's online label: BCE of every tier logit against 0 where the narrowest network classifies the input
    right, else 1; the training pass's logits keep their graph (the narrow pass runs without gradients)."""
    import torch.nn.functional as F

    model, gates = supernet_gates(0.5, random=0, width_gate_target=2.0)
    sandwich, gate_set = gates.method.sandwich, model.gate_set
    model.train()
    x = varied_inputs(6)
    gates.step(5)  # after the supernet phase: the gates decide
    with torch.no_grad(), sandwich.fixed(model):
        gate_set.fixed_decisions = sandwich.narrowest()
        narrow_pred = model(x).argmax(dim=1)
    out = model(x)
    logits = dict(gate_set.logits)
    labels = narrow_pred.clone()
    labels[:3] = (labels[:3] + 1) % 10  # the narrowest network is wrong on the first three, right on the rest
    want = torch.tensor([1.0, 1, 1, 0, 0, 0])
    expected = (
        2.0
        * torch.stack(
            [F.binary_cross_entropy_with_logits(v, want[:, None].expand_as(v)) for v in logits.values()]
        ).mean()
    )
    loss, logs = gates.method.extra_loss(model, out, 5, 1, inputs=x, labels=labels)
    assert logs["narrowest_wrong"] == pytest.approx(0.5)
    assert logs["gate_target_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert loss.requires_grad and not gate_set.fixed_decisions and not gate_set.force_open


def test_the_ranked_label_sends_the_hardest_inputs_to_the_first_width_the_density_pays_for():
    from dynprune.gates.sandwich import ranked_labels

    widths = torch.tensor([0.125, 0.5, 1.0], dtype=torch.float64)
    losses = torch.tensor([0.1, 2.0, 0.3, 1.5, 0.2, 0.05])
    # density 0.25: the width-0.5 tier for a third of the batch (0.125 + 1/3 x 0.375 = 0.25), the two hardest
    assert ranked_labels(losses, widths, 0.25).tolist() == [[0, 0], [1, 0], [0, 0], [1, 0], [0, 0], [0, 0]]
    # density 0.75: the widest for round(0.625 / 0.875 x 6) = 4 inputs, both tier logits open
    assert ranked_labels(losses, widths, 0.75)[:, 0].tolist() == [0, 1, 1, 1, 1, 0]
    assert ranked_labels(losses, widths, 0.75)[:, 1].tolist() == [0, 1, 1, 1, 1, 0]
    assert ranked_labels(losses, widths, 0.1).sum() == 0  # at or below the narrowest: every input narrowest


def deciding_gates(**options) -> tuple[nn.Module, dynprune.Gates, torch.Tensor]:
    """Width gates past a 5-step supernet phase, at step 8 of 10 (the budget mid-slide), and 6 varied inputs."""
    model, gates = supernet_gates(0.5, random=0, **options)
    model.train()
    gates.step(8)
    return model, gates, varied_inputs(6)


def run_at(model: nn.Module, gates: dynprune.Gates, x: torch.Tensor, tier_of) -> torch.Tensor:
    """The logits of ``x`` with every site held at the prefix of tier ``tier_of(site)``, no gradients."""
    sandwich, gate_set = gates.method.sandwich, model.gate_set
    with torch.no_grad(), sandwich.fixed(model):
        gate_set.fixed_decisions = {s.name: sandwich.prefix(s.name, tier_of(s.name)) for s in gate_set.sites}
        return model(x)


def test_the_ranked_gate_target_labels_each_site_at_its_density_now():
    import torch.nn.functional as F

    from dynprune.gates.sandwich import ranked_labels

    model, gates, x = deciding_gates(width_gate_target=2.0, width_gate_label="ranked")
    sandwich, gate_set, schedule = gates.method.sandwich, model.gate_set, gates.method.schedule
    narrow = run_at(model, gates, x, lambda site: 0)
    out = model(x)
    logits = dict(gate_set.logits)
    losses = F.cross_entropy(narrow, LABELS, reduction="none")
    densities = schedule.densities_at(8)
    assert 0.25 < min(densities.values()) < 1.0  # mid-slide: some inputs wide, not all
    terms = []
    for site, v in logits.items():
        target = ranked_labels(losses, sandwich.tier_widths(site), densities[site])
        assert 0 < target[:, 0].sum() < 6
        terms.append(F.binary_cross_entropy_with_logits(v, target))
    _, logs = gates.method.extra_loss(model, out, 8, 1, inputs=x, labels=LABELS)
    assert logs["gate_target_loss"] == pytest.approx(2.0 * torch.stack(terms).mean().item(), rel=1e-4)


def test_the_gain_label_ranks_inputs_by_what_the_paid_for_width_saves():
    import torch.nn.functional as F

    from dynprune.gates.sandwich import paid_tier, ranked_labels

    model, gates, x = deciding_gates(width_gate_target=1.0, width_gate_label="gain")
    sandwich, gate_set, schedule = gates.method.sandwich, model.gate_set, gates.method.schedule
    densities = schedule.densities_at(8)
    sites = [s.name for s in gate_set.sites]
    losses = [
        F.cross_entropy(run_at(model, gates, x, tier_of), LABELS, reduction="none")
        for tier_of in (lambda s: 0, lambda s: paid_tier(sandwich.tier_widths(s), densities[s]))
    ]
    assert paid_tier(torch.tensor([0.25, 0.5, 0.75, 1.0]), 0.6) == 2
    out = model(x)
    logits = dict(gate_set.logits)
    saved = losses[0] - losses[1]
    widths, density = sandwich.tier_widths(sites[0]), densities[sites[0]]
    assert not torch.equal(ranked_labels(saved, widths, density), ranked_labels(losses[0], widths, density))
    terms = [
        F.binary_cross_entropy_with_logits(v, ranked_labels(saved, sandwich.tier_widths(s), densities[s]))
        for s, v in logits.items()
    ]
    _, logs = gates.method.extra_loss(model, out, 8, 1, inputs=x, labels=LABELS)
    assert logs["gate_target_loss"] == pytest.approx(torch.stack(terms).mean().item(), rel=1e-4)


def test_the_narrowest_width_learns_every_input_from_the_routed_pass_when_asked():
    import torch.nn.functional as F

    from dynprune.gates.sandwich import soft_cross_entropy

    model, gates, x = deciding_gates(width_narrowest_weight=0.5)
    sandwich = gates.method.sandwich
    narrow = run_at(model, gates, x, lambda site: 0)
    out = model(x)
    _, logs = gates.method.extra_loss(model, out, 8, 1, inputs=x, labels=LABELS)
    expected = 0.5 * soft_cross_entropy(narrow, F.softmax(out.detach(), dim=1))
    assert logs["narrowest_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert logs["gate_target_loss"] == 0.0  # no gate target asked for: only the narrow pass's distillation
    model.zero_grad()
    out = model(x)  # the distillation's gradient alone (the budget term reaches every channel through the gates)
    sandwich.target_loss(model, x, LABELS, {}, out)[0].backward()
    conv = model.layer3[0].conv1  # its first channels are the narrowest width's; the last ones are not
    assert conv.weight.grad[0].abs().sum() > 0 and conv.weight.grad[-1].abs().sum() == 0


def test_width_terms_need_the_batch():
    model, gates = supernet_gates(0.5)
    model.train()
    gates.step(0)
    x = varied_inputs(2)
    with pytest.raises(ValueError, match="inputs=x, labels=y"):
        gates.method.extra_loss(model, model(x), 0, 0)


def test_the_supernet_phase_is_refused_under_torchrun(monkeypatch):
    """Held open, the gates get no gradient, which DDP (no find_unused_parameters) cannot take: one clear error."""
    import dynprune.gates.training as gated
    from dynprune.distributed import DistContext

    _, gates = supernet_gates(0.5)
    monkeypatch.setattr(gated, "current_distributed", lambda: DistContext(rank=0, world_size=2))
    with pytest.raises(ConfigError, match="--width-supernet is not supported under torchrun"):
        gates.method.begin(10, 5)
    with pytest.raises(ConfigError, match="--width-narrowest-weight is not supported under torchrun"):
        supernet_gates(0.0, width_narrowest_weight=1.0)  # its narrow pass learns outside DDP's wrapper


def test_episode_credit_is_refused_for_an_agent_that_is_not_off_policy():
    from agents.config import SearchConfig
    from dynprune.config import build

    with pytest.raises(ConfigError, match="--credit episode is for the off-policy agents"):
        build(SearchConfig, {"algo": "ppo", "credit": "episode", "init": "x.pt", "wandb": "disabled"})
