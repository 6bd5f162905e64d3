"""The usage floor: each site's most conditional channels held open and shut for at least a share of the batch,
on hand-made rates and in a training step."""

from __future__ import annotations

import pytest
import torch

from dynprune.gates import GatedMethod, GateOptions
from dynprune.gates.guide import usage_floor_loss
from dynprune.models import create_model


def test_the_usage_floor_is_zero_once_enough_channels_are_used_and_counts_each_missing_one():
    def loss(*rates: float, share: float = 0.25) -> float:
        return usage_floor_loss({"s": torch.tensor(rates)}, floor=0.1, share=share).item()

    used = (0.5, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # 2 of 8 channels above the floor: ceil(0.25 x 8) = 2
    assert loss(*used) == 0.0
    assert loss(0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) == pytest.approx(0.5)  # the second channel: relu(0.1) / 0.1
    assert loss(0.9, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) == pytest.approx(0.25)  # half way to the floor
    assert loss(*used, share=0.5) == pytest.approx(0.5)  # 4 channels wanted, 2 of them unused
    assert loss(*used, share=1.0) == pytest.approx(6 / 8)
    static = (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # two channels open for every input: used, not deciding
    assert loss(*static) == pytest.approx(1.0)
    assert loss(0.95, 0.97, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) == pytest.approx((0.5 + 0.7) / 2)  # shut for 5% and 3%


def test_the_usage_floor_pushes_only_the_channels_outside_its_band_and_breaks_ties_by_score():
    rates = torch.tensor([0.5, 0.05, 0.0, 0.0], requires_grad=True)
    usage_floor_loss({"s": rates}, floor=0.1, share=0.5).backward()
    assert rates.grad.tolist() == pytest.approx([0.0, -5.0, 0.0, 0.0])  # d/dr of relu(0.1 - r) / 0.1, mean of 2
    always = torch.tensor([0.5, 0.98, 0.0, 0.0], requires_grad=True)  # open for 98%: pushed to shut more often
    usage_floor_loss({"s": always}, floor=0.1, share=0.5).backward()
    assert always.grad.tolist() == pytest.approx([0.0, 5.0, 0.0, 0.0])
    for favourite in (2, 3):  # two unused channels tie: the one with the higher score is the one pushed
        tied = torch.tensor([0.5, 0.0, 0.0, 0.0], requires_grad=True)
        scores = torch.full((4,), -3.0)
        scores[favourite] = 1.0
        usage_floor_loss({"s": tied}, floor=0.1, share=0.5, scores={"s": scores}).backward()
        assert tied.grad.nonzero().flatten().tolist() == [favourite]


def test_the_usage_floor_joins_the_loss_of_a_training_step_and_reaches_the_gates():
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.25)
    options = GateOptions(
        gate_init="open", budget_warmup_epochs=0.0, gate_usage_weight=2.0, gate_usage_floor=0.5, gate_usage_share=1.0
    )
    method = GatedMethod("topk", 0.25, options)
    model = method.prepare(model, (1, 28, 28))
    method.begin(total_steps=10, steps_per_epoch=10)
    model.train()
    method.before_step(model, 5)
    loss, logs = method.extra_loss(model, model(torch.randn(8, 1, 28, 28)), step=5, epoch=0)
    gates = model.gate_set
    rates = {s: m.float().mean(dim=0) for s, m in gates.cost_masks.items()}
    scores = {s: gates.logits[s].mean(dim=0) for s in rates}  # one channel per logit here
    expected = 2.0 * usage_floor_loss(rates, 0.5, 1.0, scores)
    assert logs["usage_loss"] == pytest.approx(expected.item())
    assert logs["usage_loss"] > 0  # k < C / 2 at every site: not every channel can open for half the inputs
    loss.backward()
    assert any(g.fc2.weight.grad is not None and g.fc2.weight.grad.abs().sum() > 0 for g in gates.gates.values())
