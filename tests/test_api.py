"""dynprune as a library: the README's loops run as written, and a model written here (not in the zoo) goes
through gate, training steps, deploy and ONNX export."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dynprune
from dynprune.gates.estimators import ESTIMATORS

REPO = Path(__file__).resolve().parents[1]


def readme_blocks(section: str) -> list[str]:
    """The ```python blocks of one README section, as they stand."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write their files (gated.onnx) into the working folder
    return tmp_path


def _run(block: str) -> str:
    out = io.StringIO()
    torch.manual_seed(0)
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_the_readme_gates_loop_runs_and_reports(in_tmp):
    gates_block, _ = readme_blocks("Use it in your own training loop")
    printed = _run(gates_block)
    top1, ratio, share = (float(v) for v in re.findall(r"top-1 ([\d.]+)%, ([\d.]+) of the dense MACs, "
                                                          r"conditional share ([\d.]+)", printed)[0])  # fmt: skip
    assert top1 > 50  # one epoch on the sample learns (10 classes: chance is 10)
    assert ratio == pytest.approx(0.5, abs=0.03)
    assert 0 <= share <= 1
    assert (in_tmp / "gated.onnx").stat().st_size > 0


def test_the_readme_static_loop_runs_and_removes_channels(in_tmp):
    _, static_block = readme_blocks("Use it in your own training loop")
    printed = _run(static_block)
    ratio = float(re.findall(r"([\d.]+) of the dense MACs", printed)[0])
    assert 0.4 <= ratio <= 0.5  # the narrower model really costs what the target asked


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class UserNet(nn.Module):
    """A residual CNN a user wrote: its sites come from the dependency graph."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@pytest.mark.parametrize("estimator", ["topk", "ste"])
def test_a_user_model_is_gated_trained_deployed_and_exported(tmp_path, estimator):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = UserNet()
    assert [s.name for s in dynprune.channel_sites(model, (1, 28, 28))] == ["blocks.0.conv1", "blocks.1.conv1"]
    gates = dynprune.gate(model, (1, 28, 28), estimator, target_macs=0.6, steps=4)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(4):
        model.train()
        gates.step(step)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + gates.loss(logits, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(g.fc2.weight.grad is not None for g in model.gate_set.gates.values())  # the gates learned
    model.eval()
    deploy = gates.deploy()
    torch.testing.assert_close(deploy(x), model(x), atol=1e-4, rtol=1e-4)
    for i in range(3):  # what the report counts for an input is what the deploy model computes for it
        report = gates.evaluate([(x[i : i + 1], y[i : i + 1])])
        with FlopCounterMode(display=False) as counter:
            deploy(x[i : i + 1])
        assert report.macs == pytest.approx(counter.get_total_flops() / 2, rel=1e-6)
    exported = gates.export_onnx(tmp_path / "user.onnx", batch=4)
    assert exported.executor == ("fixed-k" if estimator == "topk" else "masked")
    session = ort.InferenceSession(str(exported.path))
    onnx_out = session.run(None, {session.get_inputs()[0].name: x[:4].numpy()})[0]
    np.testing.assert_allclose(onnx_out, model(x[:4]).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_load_rebuilds_a_run_and_the_api_is_at_the_package_top(tmp_path):
    from helpers import tiny_config

    from dynprune.models import create_model
    from dynprune.runner import run_training

    assert set(dynprune.__all__) >= {"gate", "static_prune", "channel_sites", "macs", "load"}
    assert set(dynprune.__all__) <= set(dir(dynprune))  # help(dynprune) and pydoc list the API
    run_training(tiny_config(tmp_path / "run", epochs=1, prune="l1-filter", target_macs=0.5, hard=True))
    model = dynprune.load(tmp_path / "run" / "checkpoint.pt")
    dense = create_model("lenet5", 1, 10, 28)
    assert dynprune.macs(model, (1, 28, 28)) < 0.55 * dynprune.macs(dense, (1, 28, 28))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dynprune.nope  # noqa: B018


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_the_api_builds_the_gates_the_cli_builds(estimator):
    """Same defaults and recipe as ``python -m dynprune.train --gate NAME`` (before: the API skipped the recipes)."""
    from dataclasses import asdict

    from dynprune.catalog import parse_train_cli
    from dynprune.models import create_model

    cli = parse_train_cli(["--gate", estimator, "--model", "resnet20"], "train", "")
    gates = dynprune.gate(create_model("resnet20", 1, 10, 28, width=0.25), (1, 28, 28), estimator)
    assert asdict(gates.method.options) == asdict(cli.options["gated"])
    assert gates.method.estimator.options == cli.options[estimator]
    with pytest.raises(ValueError, match=r"gates.parameters\(\)"):
        dynprune.gate(create_model("resnet20", 1, 10, 28, width=0.25), (1, 28, 28), estimator, gate_lr_scale=10)


# the method classes' own packages build them; everything else goes through the public API
BUILDERS = re.compile(r"\b(method_from_config|rebuild_from_checkpoint|GatedMethod|StaticPruneMethod)\(")
BUILDER_HOMES = {"dynprune/catalog.py", "dynprune/api.py", "dynprune/gates", "dynprune/prune", "dynprune/methods.py"}


def test_every_entry_point_builds_its_method_through_the_api():
    """train, compare, export, bench and agents.search build methods with ``build_method`` and rebuild runs with
    ``load_run``: a direct constructor elsewhere is a second way in (before: bench built ``GatedMethod`` itself)."""
    offenders = []
    for path in [*REPO.glob("dynprune/**/*.py"), *REPO.glob("agents/**/*.py")]:
        rel = path.relative_to(REPO).as_posix()
        if any(rel == home or rel.startswith(home + "/") for home in BUILDER_HOMES):
            continue
        offenders += [f"{rel}: {m.group(0)}" for m in BUILDERS.finditer(path.read_text())]
    assert offenders == []
    assert "from .api import build_method, load_run" in (REPO / "dynprune/runner.py").read_text()  # train's way in


def test_build_method_takes_flag_values_with_or_without_the_recipe():
    topk = dynprune.build_method({"gate": "topk", "target_macs": 0.25})
    plain = dynprune.build_method({"gate": "topk", "target_macs": 0.25}, recipe=False)
    assert (topk.target, plain.target) == (0.25, 0.25)
    assert topk.options.gate_boost and not plain.options.gate_boost  # topk's recipe brings feature boosting
    assert type(dynprune.build_method({"prune": "l1-filter"})).__name__ == "StaticPruneMethod"
