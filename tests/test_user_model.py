"""A user's own model from the shell: ``--model package.module:callable`` through train, rebuild and export."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import yaml
from helpers import run_module, tiny_config

from dynprune.catalog import rebuild_from_checkpoint
from dynprune.config import ConfigError
from dynprune.data import data_of_checkpoint
from dynprune.evaluation import evaluate
from dynprune.loader import BatchLoader
from dynprune.runner import run_training

USER_MODULE = textwrap.dedent(
    """
    from torch import nn

    def small_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
        )

    def thousand_classes() -> nn.Module:  # ignores the data set's class count
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 1000))
    """
)
ENTRY = "user_models_entry:small_cnn"
QUIET = ("--dataset", "synthetic", "--train-subset", "640", "--val-size", "500", "--epochs", "1")
QUIET += ("--wandb", "disabled", "--no-latency", "--threads", "1")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models_entry.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # in-process; subprocesses import it from their working directory
    return tmp_path


def test_own_model_trains_from_the_shell_and_its_checkpoint_rebuilds_and_exports(user_module):
    run = user_module / "run"
    args = ("--model", ENTRY, "--prune", "l1-filter", "--hard", "--target-macs", "0.5", "--out", str(run), *QUIET)
    proc = run_module("dynprune.train", *args, cwd=user_module)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == ENTRY  # what a rebuild builds again
    result = json.loads((run / "result.json").read_text())
    assert result["macs_ratio"] <= 0.5
    model, method, ckpt = rebuild_from_checkpoint(run / "checkpoint.pt")
    assert model[3].out_channels < 32  # channels removed, found by the dependency graph
    data = data_of_checkpoint(ckpt)
    again = evaluate(model, BatchLoader(data.test, data, 256, train=False), method, None)
    assert again.top1 == pytest.approx(result["top1"], abs=1e-9)
    onnx = user_module / "m.onnx"
    proc = run_module("dynprune.export", str(run / "checkpoint.pt"), "--onnx", str(onnx), cwd=user_module)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert onnx.stat().st_size > 0


def test_own_model_takes_gates(user_module):
    result = run_training(tiny_config(user_module / "g", model=ENTRY, gate="topk", target_macs=0.6, epochs=1))
    assert result["macs_ratio"] <= 0.6 + 1e-6
    model, _, _ = rebuild_from_checkpoint(user_module / "g" / "checkpoint.pt")
    assert [s.name for s in model.gate_set.sites]  # the user's conv sites are gated


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_module_xyz:net", "cannot import no_such_module_xyz"),
        ("user_models_entry:missing", "user_models_entry has no missing"),
        ("user_models_entry:", "expected package.module:callable"),
        ("user_models_entry:thousand_classes", r"gives \(1, 1000\) for one"),
    ],
)
def test_a_bad_entry_point_is_one_line(user_module, model, message):
    with pytest.raises(ConfigError, match=message):
        run_training(tiny_config(user_module / "bad", model=model))


BRANCHES = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TwoBranch(nn.Module):  # Inception-style: two branches joined by torch.cat
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.stem, self.bn = nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.a, self.b = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 12, 3, padding=1)
            self.bn_a, self.bn_b = nn.BatchNorm2d(8), nn.BatchNorm2d(12)
            self.head, self.fc = nn.Conv2d(20, 32, 3, padding=1, stride=2), nn.Linear(32, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn(self.stem(x)))
            x = torch.cat([torch.relu(self.bn_a(self.a(x))), torch.relu(self.bn_b(self.b(x)))], 1)
            return self.fc(torch.relu(self.head(x)).mean((2, 3)))

    class Grouped(nn.Module):  # ResNeXt-style: a grouped (not depthwise) convolution
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.stem, self.bn = nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32)
            self.g, self.bn_g = nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32)
            self.out, self.fc = nn.Conv2d(32, 64, 1), nn.Linear(64, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn_g(self.g(torch.relu(self.bn(self.stem(x))))))
            return self.fc(torch.relu(self.out(x)).mean((2, 3)))
    """
)


@pytest.mark.parametrize(
    ("name", "sites", "left_out"),
    [
        ("TwoBranch", ["stem", "head"], {"a": "by torch.cat", "b": "by torch.cat"}),
        ("Grouped", ["out"], {"stem": "g is a grouped convolution (groups=4)", "g": "grouped convolution"}),
    ],
)
def test_concat_and_grouped_channels_are_left_out_with_their_reason(tmp_path, monkeypatch, name, sites, left_out):
    from dynprune.cost import CostModel, flop_counter_macs
    from dynprune.models import create_model

    (tmp_path / "user_branches.py").write_text(BRANCHES)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = create_model(f"user_branches:{name}", 1, 10, 28)
    assert [s.name for s in model.channel_sites()] == sites
    assert set(model.sites_left_out) == set(left_out)
    assert all(part in model.sites_left_out[layer] for layer, part in left_out.items())
    assert CostModel.from_model(model, (1, 28, 28)).dense_macs == flop_counter_macs(model, (1, 28, 28))
    values = dict(model=f"user_branches:{name}", prune="l1-filter", hard=True, target_macs=0.8)
    result = run_training(tiny_config(tmp_path / "hard", **values))
    rebuilt, _, _ = rebuild_from_checkpoint(tmp_path / "hard" / "checkpoint.pt")  # a checkpoint that runs
    assert rebuilt(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert result["macs_ratio"] < 1.0
