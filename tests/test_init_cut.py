"""``--init`` from a deeper or wider CIFAR ResNet: the run's model cut out of it (``models/cut.py``)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from dynprune.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dynprune.init_weights import load_init
from dynprune.models import create_model
from dynprune.models.cut import cut_into
from dynprune.runner import run_training

KEEP_BLOCKS = 1  # the ResNet-8's one block per stage


def arch(model: str, width: float) -> dict:
    return {"model": model, "width": width, "in_channels": 3, "num_classes": 10, "image_size": 32}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics everywhere, so the equality below is not one of zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=g) + 0.5 if "running_var" in name else None
                tensor.copy_(values if values is not None else torch.randn(tensor.shape, generator=g) * 0.3)


@torch.no_grad()
def silence(bn: torch.nn.BatchNorm2d, channels: torch.Tensor) -> None:
    """These channels of this BatchNorm's output are exactly zero (eval mode)."""
    bn.weight[channels] = 0
    bn.bias[channels] = 0


def hidden_smaller_model(source: torch.nn.Module, target: torch.nn.Module, seed: int) -> None:
    """Make ``source`` compute exactly what a model of ``target``'s shape can: its blocks after the first of each
    stage add nothing (their last BN outputs zero, and the stream is >= 0 after a ReLU), and only as many channels
    per layer as ``target`` has carry anything (the rest output zero). The cut must find those channels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        alive_prev = None
        for stage in ("layer1", "layer2", "layer3"):
            src, dst = getattr(source, stage), getattr(target, stage)
            for block in list(src)[KEEP_BLOCKS:]:
                silence(block.bn2, torch.arange(block.bn2.num_features))
            width, keep = src[0].conv2.out_channels, dst[0].conv2.out_channels
            if alive_prev is None:
                alive = torch.randperm(width, generator=g)[:keep]
                writers = [source.bn1, src[0].bn2]
            else:
                lo = (width - src[0].conv1.in_channels) // 2
                carried = alive_prev + lo
                fresh_pool = torch.tensor([c for c in range(width) if not lo <= c < lo + src[0].conv1.in_channels])
                fresh = fresh_pool[torch.randperm(len(fresh_pool), generator=g)[: keep - len(alive_prev)]]
                alive = torch.cat([carried, fresh])
                writers = [src[0].bn2]
            dead = torch.tensor([c for c in range(width) if c not in set(alive.tolist())], dtype=torch.long)
            for bn in writers:
                silence(bn, dead)
                bn.weight[alive] = bn.weight[alive].abs() + 1  # the live channels rank first
            inner = src[0].conv1.out_channels
            inner_dead = torch.randperm(inner, generator=g)[: inner - dst[0].conv1.out_channels]
            src[0].conv1.weight[inner_dead] = 0  # ranked last by their filters' L1 norm
            silence(src[0].bn1, inner_dead)
            src[0].bn1.running_mean[inner_dead] = 0
            alive_prev = alive


@pytest.mark.parametrize(
    ("source_name", "source_width", "target_width"),
    [("resnet20", 1.0, 1.0), ("resnet20", 1.0, 0.625), ("resnet32", 1.0, 0.5), ("resnet32", 0.75, 0.5)],
)
def test_a_cut_model_computes_what_the_source_computes_when_the_rest_of_the_source_is_silent(
    source_name: str, source_width: float, target_width: float
):
    source = create_model(source_name, 3, 10, 32, width=source_width)
    target = create_model("resnet8", 3, 10, 32, width=target_width)
    randomise(source, seed=1)
    hidden_smaller_model(source, target, seed=2)
    randomise(target, seed=3)  # whatever it held before is overwritten
    cut_into(target, source)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    source.eval(), target.eval()
    with torch.no_grad():
        expected, got = source(x), target(x)
    assert expected.abs().max() > 0.1  # the check is not one of zeros
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_same_depth_and_width_is_an_exact_copy():
    source, target = create_model("resnet20", 3, 10, 32), create_model("resnet20", 3, 10, 32)
    randomise(source, seed=5)
    cut_into(target, source)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def save_run(tmp_path, model: torch.nn.Module, run_arch: dict):
    path = tmp_path / f"{run_arch['model']}-{run_arch.get('width')}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "arch": run_arch, "config": {}})
    return path


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        (arch("resnet8", 1.0), arch("resnet20", 1.0), "layer1 has 3 blocks here but 1 in the --init model"),
        (arch("resnet20", 0.5), arch("resnet8", 1.0), "layer1 is wider here than in the --init model"),
        (arch("lenet5", 1.0), arch("resnet8", 1.0), "only a CIFAR ResNet"),
        # narrower overall, but its last stage adds 10 channels to the 9 the source's adds (widths round per stage)
        (arch("resnet20", 0.3), arch("resnet8", 0.29), "layer3 is wider here than in the --init model"),
        ({**arch("resnet20", 1.0), "num_classes": 100}, arch("resnet8", 1.0), "made for"),
    ],
)
def test_what_cannot_be_cut_is_refused_in_one_line(tmp_path, source: dict, target: dict, why: str):
    model = create_model(source["model"], 3, source["num_classes"], 32, width=source["width"])
    path = save_run(tmp_path, model, source)
    with pytest.raises(CheckpointError, match=why) as caught:
        load_init(create_model(target["model"], 3, 10, 32, width=target["width"]), path, target)
    assert "\n" not in str(caught.value)


def test_a_run_starts_from_a_cut_of_a_deeper_run(tmp_path, capsys):
    deep = run_training(tiny_config(tmp_path / "deep", model="resnet20", width=0.5, epochs=1))
    cut_run = tiny_config(
        tmp_path / "cut", model="resnet8", width=0.25, epochs=1, init=str(tmp_path / "deep" / "checkpoint.pt")
    )
    result = run_training(cut_run)
    assert "resnet20 at width 0.5 cut to resnet8 at width 0.25" in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert saved["arch"]["model"] == "resnet8" and saved["arch"]["width"] == 0.25
    assert result["macs"] < deep["macs"] / 4


def test_a_pruned_or_gated_source_is_refused_and_an_old_checkpoint_without_width_still_loads(tmp_path):
    narrow = create_model("resnet20", 3, 10, 32, width=0.5)  # weights of another shape than its arch says
    pruned = save_run(tmp_path, narrow, arch("resnet20", 1.0))
    with pytest.raises(CheckpointError, match="its weights are not its dense model's") as caught:
        load_init(create_model("resnet8", 3, 10, 32), pruned, arch("resnet8", 1.0))
    assert "\n" not in str(caught.value) and "size mismatch" not in str(caught.value)  # not torch's key list
    model = create_model("resnet20", 3, 10, 32)
    randomise(model, seed=6)
    old = save_run(tmp_path, model, {k: v for k, v in arch("resnet20", 1.0).items() if k != "width"})
    fresh = create_model("resnet20", 3, 10, 32)
    assert load_init(fresh, old, arch("resnet20", 1.0)) is None  # the same model: loaded as it is, not cut
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
