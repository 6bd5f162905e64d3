"""The static-shape (fixed-k) executor: equal to the masked model in eager PyTorch, compiled, and ONNX Runtime;
refuses, in one line, the models it cannot run."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_bn

from dynprune.gates import GatedMethod
from dynprune.gates.fixed_k import FixedKUnsupported, to_fixed_k
from dynprune.models import create_model, list_models
from dynprune.runner import latency_on_test_images
from dynprune.runtimes import RUNTIMES
from dynprune.sites import chained_sites, linear_read_sites

SIZES = {"resnet18": 64}


def _static_shapes(name: str) -> bool:
    model = create_model(name, 3, 10, SIZES.get(name, 32), width=0.25)
    sites = model.channel_sites()
    return not chained_sites(sites) and not linear_read_sites(model, sites)


#: every zoo model the executor runs: no chains of sites, no site flattened into a linear layer (read from each
#: model's sites, so a new zoo model is covered without touching this file)
SUPPORTED = tuple(name for name in list_models() if _static_shapes(name))


def random_topk(name: str, target: float = 0.5, width: float = 1.0, estimator: str = "topk"):
    """A zoo model with random, well-separated gate logits (no ties that a rounding could flip) and
    non-trivial BN statistics, so that folding and gathering are really tested."""
    torch.manual_seed(0)
    size = SIZES.get(name, 32)
    model = create_model(name, 3, 10, size, width=width)
    model = GatedMethod(estimator, target, calibrate=False).prepare(model, (3, size, size))
    randomize_bn(model)  # non-trivial BN so that folding is really tested
    for gate in model.gate_set.gates.values():
        torch.nn.init.normal_(gate.fc2.weight, std=2.0)
        # distinct biases: a gate whose hidden ReLUs are all 0 gives logits = bias, and equal logits are a tie
        # that torch.topk and ONNX's TopK (lower index first) may break differently
        torch.nn.init.normal_(gate.fc2.bias, std=0.01)
    return model.eval(), (3, size, size)


def max_error(executor, model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (executor(x) - model(x)).abs().max().item()


def test_supported_models_are_the_zoo_without_chains_of_sites():
    supported = []
    for name in list_models():
        try:
            to_fixed_k(random_topk(name, width=0.25)[0])
            supported.append(name)
        except FixedKUnsupported as exc:
            assert "chain of sites" in str(exc) and "\n" not in str(exc), exc
    assert tuple(supported) == SUPPORTED
    assert {"resnet20", "mobilenetv2"} <= set(SUPPORTED) and "vgg11" not in SUPPORTED


@pytest.mark.parametrize("name", SUPPORTED)
def test_fixed_k_equals_the_masked_model_per_sample(name):
    model, shape = random_topk(name)
    executor = to_fixed_k(model)
    torch.manual_seed(1)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        model(x)
    masks = list(model.gate_set.masks.values())
    # samples keep different channel sets: the per-sample grouped convolutions are really exercised
    assert any(not torch.equal(m[0], m[1]) for m in masks)
    assert max_error(executor, model, x) < 1e-4
    assert max_error(executor, model, x[:1]) < 1e-4
    for layer in executor.layers():  # every layer wide (dense conv + gather / scatter) is exact too
        layer.wide = {1: layer.role != "depthwise", 5: layer.role != "depthwise"}
    assert max_error(executor, model, x) < 1e-4
    assert max_error(executor, model, x[:1]) < 1e-4


def test_autotune_chooses_a_mode_per_layer_and_stays_exact():
    model, shape = random_topk("resnet20")
    executor = to_fixed_k(model)
    x = torch.randn(4, *shape)
    counts = executor.autotune(x, min_run_time=0.005)
    assert counts["narrow"] + counts["wide"] == 2 * len(model.gate_set.sites)  # a producer and a consumer each
    assert all(4 in layer.wide for layer in executor.layers() if layer.role != "depthwise")
    assert max_error(executor, model, x) < 1e-4


def test_the_gated_methods_deploy_model_runs_fixed_k_as_a_strategy():
    model, shape = random_topk("resnet20")
    deploy = GatedMethod("topk", 0.5, calibrate=False).deploy_model(model)
    x = torch.randn(4, *shape)
    assert "fixedk" in deploy.candidates(4) and deploy.strategy_for(1) == "fixedk"  # batch 1: static shapes
    deploy.strategy = "fixedk"
    assert max_error(deploy, model, x) < 1e-4 and max_error(deploy, model, x[:1]) < 1e-4
    deploy.strategy = "auto"
    choice = deploy.autotune(x, min_run_time=0.02)  # fixed-k's own narrow/wide choice is tuned when it is timed
    assert deploy.strategy_for(4) == choice and all(4 in m.wide for m in deploy.executors["fixedk"].layers())
    assert max_error(deploy, model, x) < 1e-4
    threshold, _ = random_topk("resnet20", estimator="ste")  # threshold gates: the data-dependent strategies only
    deploy = GatedMethod("ste", 0.5, calibrate=False).deploy_model(threshold)
    assert "fixedk" not in deploy.candidates(4) and deploy.strategy_for(1) == "gather"
    deploy.strategy = "fixedk"
    with pytest.raises(ValueError, match="unknown deploy strategy 'fixedk'"):
        deploy(x)


def test_run_latency_times_the_fastest_strategy_per_batch_size():
    model, shape = random_topk("resnet20", width=0.25)
    deploy = GatedMethod("topk", 0.5, calibrate=False).deploy_model(model)
    images = [(torch.randn(64, *shape), torch.zeros(64, dtype=torch.long))]  # a loader's first batch
    latency = latency_on_test_images(deploy, images, torch.device("cpu"), False, min_run_time=0.01)
    assert latency["deployed"] == "DeployModel" and latency["b1"] > 0 and latency["b64"] > 0
    assert latency["strategies"] == {"b1": deploy.strategy_for(1), "b64": deploy.strategy_for(64)}
    assert set(latency["strategies"].values()) <= set(deploy.candidates(64))


def test_refuses_threshold_gates_in_one_line():
    model, _ = random_topk("resnet20", estimator="ste")
    with pytest.raises(FixedKUnsupported, match="threshold gates.*--gate topk") as info:
        to_fixed_k(model)
    assert "\n" not in str(info.value)


def test_mobilenetv2_narrow_width_has_no_stem_site_tied_to_a_residual():
    model = create_model("mobilenetv2", 3, 10, 32, width=0.25)
    assert model.blocks[0].use_residual and "stem" not in {s.name for s in model.channel_sites()}
    assert "stem" in {s.name for s in create_model("mobilenetv2", 3, 10, 32).channel_sites()}


# Every supported zoo model family through ONNX Runtime at a quarter width (2-12 s each on 2 idle cores): a batch of
# 4 (the per-sample grouped convolutions) for all, the batch-1 path (plain narrow convolutions) for two. ResNet-8,
# ResNet-32 and ResNet-110 are ResNet-20's and ResNet-56's blocks in other numbers (the same sites and ops;
# ResNet-110 alone took 40 s)
SAME_OPS_AS_A_KEPT_ONE = {"resnet8", "resnet32", "resnet110"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "batch"),
    [*((name, 4) for name in SUPPORTED if name not in SAME_OPS_AS_A_KEPT_ONE), ("mobilenetv2", 1), ("resnet20", 1)],
)
def test_onnx_runtime_equals_the_masked_model(name, batch):
    model, shape = random_topk(name, width=0.25)
    torch.manual_seed(1)
    x = torch.randn(batch, *shape)
    executor = RUNTIMES.get("onnxruntime")(to_fixed_k(model), x, 2)
    assert max_error(executor, model, x) < 1e-4


# torch.compile of a zoo ResNet-20 takes ~17 s on 2 idle cores (as long as a 3-conv model: the fixed cost
# dominates); the deeper ResNets repeat the same ops, so ResNet-20 stands for them
@pytest.mark.slow
def test_compiled_equals_the_masked_model_per_sample():
    model, shape = random_topk("resnet20", width=0.25)
    torch.manual_seed(1)
    x = torch.randn(3, *shape)  # the batch-1 path is exported and checked by the ONNX tests above
    executor = RUNTIMES.get("compiled")(to_fixed_k(model), x, 2)
    assert max_error(executor, model, x) < 1e-4


@pytest.mark.slow
def test_export_cli_writes_an_onnx_file_that_equals_pytorch_on_real_test_images(tmp_path):
    import json

    from helpers import DATA, DATASET, run_module, tiny_config

    from dynprune.runner import run_training

    cfg = dict(model="resnet20", width=0.25, epochs=1, train_subset=256, test_subset=500, gate="topk", target_macs=0.5)
    run_training(tiny_config(tmp_path / "topk", **cfg, dataset=DATASET, data_dir=str(DATA), val_size=256))
    out = tmp_path / "model.onnx"
    args = ("--onnx", str(out), "--batch", "4", "--check-images", "32")
    proc = run_module("dynprune.export", str(tmp_path / "topk" / "checkpoint.pt"), *args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "model.onnx.json").read_text())
    assert report["checked_images"] == 32 and report["max_relative_error"] <= 1e-4 and report["batch"] == 4
    assert report["max_abs_error"] <= 1e-4 * report["logit_scale"] and report["logit_scale"] >= 1.0
    assert report["input_shape"] == [1, 28, 28] and out.stat().st_size > 10_000
    assert "OK" in proc.stdout and "top-1 agrees on" in proc.stdout


def test_export_judges_the_error_against_the_logits_scale(tmp_path):
    """Logits in the tens of thousands differ in their last float32 digits between runtimes: not a failure."""
    import json

    from helpers import run_module, tiny_config

    from dynprune.checkpoints import load_checkpoint, save_checkpoint
    from dynprune.runner import run_training

    run_training(tiny_config(tmp_path / "dense", epochs=1))
    ckpt = load_checkpoint(tmp_path / "dense" / "checkpoint.pt")
    for key in [k for k in ckpt["model"] if k.startswith("fc3.")]:  # LeNet-5's last layer: logits x 1e4
        ckpt["model"][key] = ckpt["model"][key] * 1e4
    save_checkpoint(tmp_path / "dense" / "checkpoint.pt", ckpt)
    out = tmp_path / "model.onnx"
    args = ("--onnx", str(out), "--check-images", "64", "--threads", "1")
    proc = run_module("dynprune.export", str(tmp_path / "dense" / "checkpoint.pt"), *args, timeout=300)
    report = json.loads((tmp_path / "model.onnx.json").read_text())
    assert report["logit_scale"] > 1e3  # the scaled logits
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    assert report["max_relative_error"] <= 1e-4 and report["top1_agreement"] == 1.0
