"""Network-scope width gates (``--gate width --width-scope network``): one width per input for the whole network,
deployed as a router over one static narrow model per width (``gates/routed.py``)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_RESNET, tiny_config
from torch import nn

import dynprune
from dynprune.catalog import rebuild_from_checkpoint
from dynprune.gates.routed import RoutedUnsupported, RoutedWidths, narrow_model, width_index
from dynprune.gates.switchable_bn import SwitchableBatchNorm2d
from dynprune.models import create_model, input_shape
from dynprune.runner import run_training

CHOICES = [0.25, 0.5, 0.75, 1.0]


def routed_gates(scope: str = "network", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    dynprune.gate(model, (1, 28, 28), "width", target_macs=0.5, width_choices=CHOICES, width_scope=scope)
    for gate in model.gate_set.gates.values():
        nn.init.normal_(gate.fc2.weight, std=2.0)
        nn.init.normal_(gate.fc2.bias, std=1.0)
        gate.bn.running_var.fill_(1e-3)  # hidden units far from zero: the logits differ between inputs
    return model.eval()


def varied_inputs(n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 28, 28, generator=generator) + 2 * torch.randn(n, 1, 1, 1, generator=generator)


def kept_share(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per site, each input's share of the site's channels kept by its last forward."""
    return {site: mask.mean(dim=1) for site, mask in model.gate_set.masks.items()}


def test_every_site_runs_the_width_the_first_sites_gate_chose():
    model, x = routed_gates(), varied_inputs(32)
    with torch.no_grad():
        model(x)
    router = model.gate_set.router
    widths = width_index(model.gate_set.logits[router])
    assert router == model.gate_set.sites[0].name and len(widths.unique()) >= 2  # inputs differ
    expected = torch.tensor(CHOICES)[widths]
    for site, share in kept_share(model).items():
        assert torch.allclose(share, expected), site  # at every site, the width the router chose
    site_scope = routed_gates("site")
    with torch.no_grad():
        site_scope(x)
    shares = torch.stack(list(kept_share(site_scope).values()))
    assert not bool((shares == shares[0]).all())  # per-site gates choose per site


def test_the_routers_hidden_layer_is_as_wide_as_its_input_so_inputs_do_not_tie():
    routed, per_site = routed_gates(), routed_gates("site")
    first = routed.gate_set.sites[0].name
    router = routed.gate_set.gate(first)
    assert router.fc1.out_features == router.fc1.in_features == 8  # the half-width stem's 8 channels
    assert per_site.gate_set.gate(first).fc1.out_features == 4  # max(4, 8 // --gate-reduction 4)
    later = routed.gate_set.sites[-1].name
    assert routed.gate_set.gate(later).fc1.out_features == per_site.gate_set.gate(later).fc1.out_features


def test_the_routed_executor_equals_the_masked_model_batched_and_one_by_one():
    model, x = routed_gates(), varied_inputs(32)
    with torch.no_grad():
        masked = model(x)
    routed = RoutedWidths(model)
    assert len(routed.route(x).unique()) >= 2  # the batch is split into groups of one width each
    torch.testing.assert_close(routed(x), masked, atol=1e-5, rtol=1e-5)
    one_by_one = torch.cat([routed(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(one_by_one, masked, atol=1e-5, rtol=1e-5)
    widest = sum(p.numel() for p in routed.branches[-1].parameters())
    narrowest = sum(p.numel() for p in routed.branches[0].parameters())
    assert narrowest < widest / 3  # the narrow branch is a smaller static model, not a masked one


def test_a_branch_is_the_model_sliced_to_that_width():
    model = routed_gates()
    branch = narrow_model(model, 1)  # the 0.5 choice
    for site in model.gate_set.sites:
        producer = branch.get_submodule(site.producer)
        assert producer.out_channels == model.gate_set.gate(site.name).channels // 2, site.name


def test_prepared_branches_serve_their_group_sizes():
    """Compiled and ONNX Runtime executors are built per input shape: the router for the example's batch, a
    branch per (width, group size) of the example; other sizes fall back to the branch itself."""
    model, x = routed_gates(), varied_inputs(16)
    routed = RoutedWidths(model)
    built = []

    def make(module: nn.Module, example: torch.Tensor, threads: int):
        built.append(example.shape[0])
        return module

    routed.prepare(make, x, 1)
    widths = routed.route(x)
    groups = [(widths == w).sum().item() for w in widths.unique()]
    assert sorted(built) == sorted([len(x), *groups])  # the router for the whole batch, a branch per group
    branches = {(w, (widths == w).sum().item()) for w in widths.unique().tolist()}
    assert set(routed.prepared) == {(-1, len(x)), *branches}


def test_the_deploy_model_runs_routed_at_every_batch_size_and_site_scope_has_no_router():
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    gates = dynprune.gate(model, (1, 28, 28), "width", target_macs=0.5, width_choices=CHOICES, width_scope="network")
    deploy = gates.method.deploy_model(model.eval())
    assert deploy.strategy_for(1) == "routed" and deploy.strategy_for(64) == "routed"
    assert deploy.candidates(8) == ("routed",)  # the built-in strategies run each site's own gate: not offered
    deploy.strategy = "union"
    with pytest.raises(ValueError, match="'union' does not compute this model"):
        deploy(varied_inputs(2))
    deploy.strategy = "auto"
    x = varied_inputs(8)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(RoutedUnsupported, match="--width-scope network"):
        RoutedWidths(routed_gates("site"))


@pytest.mark.slow
def test_a_network_scope_run_trains_saves_and_rebuilds_to_the_routed_model(tmp_path):
    """With switchable BN (one BN per width after the router): the run and its rebuild carry them; without, the
    path is the same less the switch (the unit tests above). The export of such a model (the router and one static
    model per width, each width's BN folded into its branch) is test_switchable_bn's; the export CLI's report on
    real test images is test_fixed_k's and test_cascade's (one ``write_files`` for every deploy model)."""
    out = tmp_path / "run"
    cfg = tiny_config(
        out, **TINY_RESNET, gate="width", width_scope="network", width_choices=CHOICES, target_macs=0.6, epochs=1,
        width_switchable_bn=True, measure_dynamism=True,
    )  # fmt: skip
    result = run_training(cfg)
    model, _, ckpt = rebuild_from_checkpoint(str(out / "checkpoint.pt"))
    assert sum(isinstance(m, SwitchableBatchNorm2d) for m in model.modules()) == 18  # all but the stem's
    x = torch.randn(16, *input_shape(ckpt["arch"]))
    with torch.no_grad():
        masked = model(x)
    shares = torch.stack(list(kept_share(model).values()))
    assert bool((shares == shares[0]).all())  # one width per input, every site
    torch.testing.assert_close(RoutedWidths(model)(x), masked, atol=1e-5, rtol=1e-5)
    # what the router's choice is worth at the same MACs, measured on the saved model's own test pass
    assert result["routed_top1"] == pytest.approx(result["top1"], abs=1e-6)
    assert len(result["width_shares"]) == len(result["width_alone_top1"]) == len(CHOICES)
    assert sum(result["width_shares"]) == pytest.approx(1.0)
    assert result["routing_gain"] == pytest.approx(result["routed_top1"] - result["random_routing_top1"])
    rates = result["site_open_rates"]  # the test pass: every site kept the same share of its channels
    assert set(rates) == {s.name for s in model.gate_set.sites} and max(rates.values()) - min(rates.values()) < 0.02


@pytest.mark.slow
def test_the_speed_bench_times_the_routed_executor_in_eager_and_onnx_runtime():
    """bench dynamic --gate width --width-scope network: the routed executor is a deploy candidate in eager and
    the one candidate in the static-shape runtimes (each width's branch built in the runtime)."""
    from dynprune.bench.dynamic import Executors, GatedCase, random_gated_model

    model, method, shape = random_gated_model("resnet20", 0.5, gate="width", width_scope="network")
    case = GatedCase("resnet20", 0.5, model, method, shape)
    built = Executors.build(case, "cpu")
    x = case.inputs(8)
    with torch.no_grad():
        masked = model(x)
    for runtime in ("eager", "onnxruntime"):
        executors, candidates = built.timed(runtime, x, 1)
        assert "routed" in candidates, runtime
        torch.testing.assert_close(executors["routed"](x), masked, atol=1e-4, rtol=1e-4)
    assert built.routed is not None and set(built.routed.prepared.values()) - set(built.routed.branches)
    executors, _ = built.timed("onnxruntime", x, 1, one_by_one=True)  # batch-1 rows: an image at a time
    one_by_one = torch.cat([executors[name](x[i : i + 1]) for name in ("routed",) for i in range(len(x))])
    torch.testing.assert_close(one_by_one, masked, atol=1e-4, rtol=1e-4)
    assert {size for _, size in built.routed.prepared} == {1}


def test_a_fixed_router_routes_every_site_and_the_supernet_draws_one_width_for_all():
    """The frozen-gate ablation fixes sites: a fixed router width is every follower's width. The supernet's
    random passes draw one width for every site, as the router chooses at deploy."""
    from dynprune.gates.sandwich import Sandwich

    model, x = routed_gates(), varied_inputs(8)
    gate_set = model.gate_set
    sandwich = Sandwich(gate_set, random=3)
    gate_set.fixed_decisions = {gate_set.router: sandwich.prefix(gate_set.router, 1)}  # the 0.5 choice
    with torch.no_grad():
        model(x)
    for site, share in kept_share(model).items():
        assert torch.allclose(share, torch.full_like(share, 0.5)), site
    gate_set.fixed_decisions = {}
    for name, fixed in sandwich.passes()[1:]:
        shares = {site: float(decision.mean()) for site, decision in fixed.items()}
        assert len(set(shares.values())) == 1, (name, shares)  # one width at every site
