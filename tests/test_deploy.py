from __future__ import annotations

import json
import time

import pytest
import torch
from helpers import QUICK_TIMING, randomize_bn, run_module

from dynprune.fold import fold_bn
from dynprune.gates import GatedMethod
from dynprune.gates.deploy import to_deploy
from dynprune.models import create_model, list_models
from dynprune.sites import chained_sites, linear_read_sites

SIZES = {"resnet18": 64}


def random_gated(name: str, gate_std: float = 1.0, bias: float = 0.0):
    torch.manual_seed(0)
    size = SIZES.get(name, 32)
    model = create_model(name, 3, 10, size)
    model = GatedMethod("ste", 0.5).prepare(model, (3, size, size))
    randomize_bn(model)  # non-trivial BN so that folding is really tested
    for gate in model.gate_set.gates.values():
        torch.nn.init.normal_(gate.fc2.weight, std=gate_std)
        torch.nn.init.constant_(gate.fc2.bias, bias)
    return model.eval(), (3, size, size)


@pytest.mark.parametrize("name", list_models())
def test_deploy_equals_masked_model_for_every_strategy(name):
    model, shape = random_gated(name)
    deploy = to_deploy(model)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        reference = model(x)
        open_rates = [m.mean().item() for m in model.gate_set.masks.values()]
        assert 0.05 < sum(open_rates) / len(open_rates) < 0.95, "gates should be partly open for a real test"
        for strategy in (*deploy.candidates(), "auto"):
            deploy.strategy = strategy
            assert (deploy(x) - reference).abs().max().item() < 1e-4, strategy
            assert (deploy(x[:1]) - reference[:1]).abs().max().item() < 1e-4, strategy
    sites = model.gate_set.sites
    packable = not chained_sites(sites) and not linear_read_sites(model, sites)  # from the model, not its name
    assert ("grouped" in deploy.candidates()) == packable, "chains of sites cannot pack"


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_grouped_strategy_packs_equal_channel_sets_exactly(name):
    from dynprune.gates.site_runtime import MIN_GROUP_SIZE

    model, shape = random_gated(name)
    deploy = to_deploy(model)
    torch.manual_seed(1)
    distinct = torch.randn(5, *shape) * 2 + torch.linspace(-3, 3, 5)[:, None, None, None]  # decisions differ
    # samples 0 and 1 repeated: two common channel sets at every site; 2-4 once each: the union pass
    x = torch.cat([distinct[:1].repeat(MIN_GROUP_SIZE, 1, 1, 1), distinct[1:2].repeat(MIN_GROUP_SIZE + 1, 1, 1, 1)])
    x = torch.cat([x, distinct[2:]])[torch.randperm(2 * MIN_GROUP_SIZE + 4)]
    deploy.strategy = "grouped"
    with torch.no_grad():
        reference = model(x)
        assert (deploy(x) - reference).abs().max().item() < 1e-4
    sizes = {name: sorted(g.samples.numel() for g in rt.groups) for name, rt in deploy.runtimes.items()}
    assert all(sum(s) == x.shape[0] for s in sizes.values())
    assert any(len(s) >= 3 for s in sizes.values()), sizes  # two common groups + the rest at some site
    for rt in deploy.runtimes.values():
        assert rt.width == max(g.idx.numel() for g in rt.groups) <= rt.channels


def test_grouped_strategy_is_refused_for_chains_of_sites():
    model, shape = random_gated("vgg11")
    deploy = to_deploy(model)
    deploy.strategy = "grouped"
    with pytest.raises(ValueError, match="use 'union'"):
        deploy(torch.randn(2, *shape))
    deploy.strategy = "fastest"
    with pytest.raises(ValueError, match="unknown deploy strategy 'fastest'"):
        deploy(torch.randn(2, *shape))


def test_deploy_handles_fully_closed_and_fully_open_sites():
    model, shape = random_gated("resnet20")
    gates = list(model.gate_set.gates.values())
    torch.nn.init.zeros_(gates[0].fc2.weight)
    torch.nn.init.constant_(gates[0].fc2.bias, -5.0)  # site 0 closed for every sample
    torch.nn.init.zeros_(gates[1].fc2.weight)
    torch.nn.init.constant_(gates[1].fc2.bias, 5.0)  # site 1 open for every sample
    deploy = to_deploy(model)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        reference = model(x)
        for strategy in deploy.candidates():
            deploy.strategy = strategy
            assert torch.allclose(deploy(x), reference, atol=1e-4), strategy


def test_deploy_leaves_the_trained_model_untouched():
    model, shape = random_gated("mobilenetv2")
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before = model(x)
        to_deploy(model)
        assert torch.equal(model(x), before)


def test_fold_bn_keeps_outputs():
    model, shape = random_gated("vgg11")
    del model.gate_set  # the hooks stay but a plain copy is what fold_bn is for
    plain = create_model("vgg11", 3, 10, 32).eval()
    folded = fold_bn(plain)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(folded(x), plain(x), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_fast_pooling_is_exact_and_keeps_the_pool_settings():
    from dynprune.fold import ChannelsLastMaxPool2d, fast_pooling

    model = torch.nn.Sequential(
        torch.nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.MaxPool2d(2, return_indices=True)
    )
    fast = fast_pooling(torch.nn.Sequential(*[torch.nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(2, ceil_mode=True)]))
    assert all(type(m) is ChannelsLastMaxPool2d for m in fast)
    assert fast[1].ceil_mode and not fast[1].return_indices
    x = torch.randn(2, 5, 17, 17)
    assert torch.equal(fast(x), model[1](model[0](x)))
    assert fast(x).is_contiguous()  # handed back in the input's layout
    with_indices = fast_pooling(torch.nn.Sequential(model[2]))[0]
    out, idx = with_indices(x)
    ref_out, ref_idx = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx)
    resnet = fold_bn(create_model("resnet18", 3, 10, 64))
    assert any(isinstance(m, ChannelsLastMaxPool2d) for m in resnet.modules())


def test_autotune_picks_a_measured_strategy():
    model, shape = random_gated("resnet20")
    deploy = to_deploy(model)
    choice = deploy.autotune(torch.randn(8, *shape), min_run_time=0.02)
    assert choice in ("gather", "union", "grouped", "masked") and deploy.strategy_for(8) == choice


class _Idle(torch.nn.Module):
    """An executor that costs what its sleep says (a stand-in whose speed is known)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_autotune_picks_the_fastest_by_the_projects_timing():
    model, shape = random_gated("resnet20")
    deploy = to_deploy(model)
    deploy.add_executor("quick", _Idle(0.0))
    deploy.add_executor("slow", _Idle(0.05))
    assert deploy.autotune(torch.randn(8, *shape), candidates=("union", "quick", "slow"), min_run_time=0.02) == "quick"


@pytest.mark.slow  # the CLI end to end (about 20 s): in the slow tier with the other bench-row tests
def test_bench_dynamic_cli_writes_rows(tmp_path):
    out = tmp_path / "rows.json"
    proc = run_module(
        "dynprune.bench",
        "dynamic",
        "--models",
        "resnet20",
        "--targets",
        "0.5",
        "--batch-sizes",
        "1,4",
        *QUICK_TIMING,
        "--json",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        for key in (
            "model",
            "target",
            "batch",
            "dense_ms",
            "masked_ms",
            "deploy_ms",
            "theoretical_speedup",
            "measured_speedup",
            "realization",
        ):
            assert key in r
        assert abs(r["macs_ratio"] - 0.5) < 0.05
        assert r["realization"] == pytest.approx(r["measured_speedup"] / r["theoretical_speedup"])
        # random topk gates: the fixed-k executor competes, and the same k per site hard-pruned is timed alongside
        assert r["runtime"] == "eager" and r["hard_ms"] > 0 and 0 < r["hard_realization"] < 5
    assert "realiz." in proc.stdout and "hard re." in proc.stdout


@pytest.mark.slow
def test_bench_rows_time_dense_deploy_and_the_hard_twin_in_onnx_runtime():
    from helpers import small_gated_residual

    from dynprune.bench.dynamic import GatedCase, Timing, rows_for
    from dynprune.gates.method import GatedMethod

    model = small_gated_residual()
    method = GatedMethod("topk", 0.5, calibrate=False)
    method.prepare(small_gated_residual(), (3, 16, 16))  # the same sites: its cost model serves the MAC ratio
    case = GatedCase("small", 0.5, model, method, (3, 16, 16))
    (row,) = rows_for(case, Timing((2,), 1, 0.01, runtimes=("onnxruntime",)))
    assert row.runtime == "onnxruntime" and row.strategy == "fixedk" and row.masked_ms is None
    assert row.dense_ms > 0 and row.hard_ms > 0 and row.batch == 2 and 0.4 < row.macs_ratio < 0.9
    assert 0 < row.hard_realization < 5


def test_bench_dynamic_refuses_an_unknown_runtime():
    proc = run_module("dynprune.bench", "dynamic", "--runtime", "tensorrt", "--models", "resnet20", timeout=60)
    assert proc.returncode == 2 and "unknown --runtime ['tensorrt']" in proc.stderr
    assert "allowed: compiled, eager, onnxruntime" in proc.stderr


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_breakdown_replays_the_deploy_decisions_exactly(name):
    from dynprune.bench.breakdown import FixedConv, replay_executor

    model, shape = random_gated(name)
    deploy = to_deploy(model)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        reference = deploy(x)
        fixed, presliced = replay_executor(deploy, x, False), replay_executor(deploy, x, True)
        assert (fixed(x) - reference).abs().max().item() < 1e-5
        assert (presliced(x) - reference).abs().max().item() < 1e-5
        other = torch.randn(1, *shape)  # replays keep x's channel sets, whatever the input
        assert (presliced(other) - deploy(other)).abs().max().item() > 1e-3
    narrowed = [m for m in presliced.modules() if isinstance(m, FixedConv) and m.presliced is not None]
    assert any(m.presliced[0].shape != m.conv.weight.shape for m in narrowed)
    with pytest.raises(ValueError, match="one sample"):
        replay_executor(deploy, torch.randn(2, *shape), True)


def test_bench_rejects_unknown_model(capsys):
    from dynprune.bench.__main__ import main  # in this process: the shell path is test_cli_errors' (start-up costs)

    cases = [(["--models", "resnet21"], "unknown models ['resnet21']")]
    cases.append((["--models", "resnet20", "--device", "tpu"], "unknown --device 'tpu'"))
    if not torch.cuda.is_available():
        cases.append((["--models", "resnet20", "--device", "cuda"], "no CUDA device"))
    for args, needle in cases:
        try:
            code = main(["dynamic", *args])
        except SystemExit as exc:
            code = exc.code
        stderr = capsys.readouterr().err
        assert code == 2 and needle in stderr and "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_bench_dynamic_times_a_trained_checkpoint_on_real_images(tmp_path):
    from helpers import TINY_RESNET, tiny_config

    from dynprune.runner import run_training

    run_training(tiny_config(tmp_path / "ste", **TINY_RESNET, epochs=1, gate="ste", target_macs=0.5))
    hard = dict(TINY_RESNET, epochs=1, prune="l1-filter", target_macs=0.5, hard=True)
    run_training(tiny_config(tmp_path / "hard", **hard))
    out = tmp_path / "rows.json"
    proc = run_module(
        "dynprune.bench",
        "dynamic",
        "--models",
        "",
        "--checkpoint",
        str(tmp_path / "ste" / "checkpoint.pt"),
        "--checkpoint",
        str(tmp_path / "hard" / "checkpoint.pt"),
        "--batch-sizes",
        "1,4",
        *QUICK_TIMING,
        "--breakdown",
        "--json",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows[:2]] == ["resnet20*", "resnet20*"] and rows[0]["target"] == 0.5
    static = rows[2:]  # the hard-pruned run in the same rows: physically narrower, no masked column
    assert [r["model"] for r in static] == ["resnet20/l1-filter"] * 2 and [r["batch"] for r in static] == [1, 4]
    for r in static:
        assert r["strategy"] == "static" and r["masked_ms"] is None and r["target"] == 0.5
        assert 0.4 < r["macs_ratio"] <= 0.5 and r["theoretical_speedup"] == pytest.approx(1 / r["macs_ratio"])
    assert "resnet20/l1-filter" in proc.stdout
    (split,) = json.loads((tmp_path / "rows_breakdown.json").read_text())
    assert split["model"] == "resnet20*" and 0 < split["macs_ratio"] < 1
    assert split["gate_ms"] == pytest.approx(split["deploy_ms"] - split["fixed_ms"])
    assert split["gather_ms"] == pytest.approx(split["fixed_ms"] - split["presliced_ms"])
    assert "batch-1 breakdown" in proc.stdout
