"""Switchable BatchNorm for network-scope width gates (``--width-switchable-bn``): one BN per width after the
router, each input normalised by its width's, deployed folded into its width's narrow model (a run, its rebuild
and export: tests/test_routed.py)."""

from __future__ import annotations

import pytest
import torch
from test_routed import CHOICES, varied_inputs
from test_width import LABELS
from torch import nn

import dynprune
from dynprune.base import ConfigError
from dynprune.gates.estimators.width import WidthOptions
from dynprune.gates.routed import OrtRouted, RoutedWidths, width_index
from dynprune.gates.routing_gain import routing_gain
from dynprune.gates.switchable_bn import Route, SwitchableBatchNorm2d
from dynprune.models import create_model


def switchable_gates(**options) -> tuple[nn.Module, dynprune.Gates]:
    torch.manual_seed(0)
    model = create_model("resnet20", 1, 10, 28, width=0.5)
    gates = dynprune.gate(
        model, (1, 28, 28), "width", target_macs=0.5, width_choices=CHOICES, width_scope="network",
        width_switchable_bn=True, **options,
    )  # fmt: skip
    return model, gates


def switchable(model: nn.Module) -> dict[str, SwitchableBatchNorm2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SwitchableBatchNorm2d)}


def test_every_batch_norm_after_the_router_is_switched_and_the_stem_stays_shared():
    model, _ = switchable_gates()
    switched = switchable(model)
    plain = [n for n, m in model.named_modules() if type(m) is nn.BatchNorm2d and ".norms." not in n]
    assert plain == ["bn1"]  # the stem runs before the router decides: the same input at every width
    assert len(switched) == 18 and all(len(m.norms) == len(CHOICES) for m in switched.values())
    first = switched["layer1.0.bn1"].norms
    assert torch.equal(first[0].weight, first[3].weight) and first[0] is not first[3]  # copies of the dense BN


def test_in_training_each_width_is_normalised_by_its_own_batch_statistics():
    route = Route()
    norm = SwitchableBatchNorm2d(nn.BatchNorm2d(3), 2, route)
    x = torch.randn(8, 3, 4, 4) * torch.arange(1, 9).view(8, 1, 1, 1)
    route.index = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    out = norm.train()(x)
    for w in (0, 1):
        rows = route.index == w
        expected = nn.functional.batch_norm(x[rows], None, None, training=True)  # affine starts at 1, 0
        torch.testing.assert_close(out[rows], expected)
        mean = x[rows].mean(dim=(0, 2, 3))
        torch.testing.assert_close(norm.norms[w].running_mean, 0.1 * mean)  # momentum 0.1 from zero
    route.index = None
    with pytest.raises(RuntimeError, match="before the network's router chose"):
        norm(x)


def test_the_routed_executor_equals_the_masked_model_with_a_batch_norm_per_width():
    model, _ = switchable_gates()
    for gate in model.gate_set.gates.values():
        nn.init.normal_(gate.fc2.weight, std=2.0)
        nn.init.normal_(gate.fc2.bias, std=1.0)
        gate.bn.running_var.fill_(1e-3)  # hidden units far from zero: the logits differ between inputs
    with torch.no_grad():  # every width's BN its own: a branch built with the wrong one would differ
        for m in switchable(model).values():
            for w, norm in enumerate(m.norms):
                norm.weight.mul_(1 + 0.3 * w)
                norm.running_mean.add_(0.1 * w)
    model.eval()
    x = varied_inputs(32)
    with torch.no_grad():
        masked = model(x)
    assert len(width_index(model.gate_set.logits[model.gate_set.router]).unique()) >= 2
    torch.testing.assert_close(RoutedWidths(model)(x), masked, atol=1e-5, rtol=1e-5)


def test_the_narrow_passes_train_their_own_statistics_and_leave_the_others_alone():
    model, gates = switchable_gates(width_supernet=0.5, width_random=0, steps=10, steps_per_epoch=5)
    model.train()
    x = varied_inputs(6)
    gates.step(0)
    widest = model(x)  # the supernet's training pass: every input at the widest width
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    gates.method.extra_loss(model, widest, 0, 0, inputs=x, labels=LABELS)  # + the narrowest pass
    changed = {k for k, v in before.items() if not torch.equal(v, model.state_dict()[k])}
    narrowest = {k for k in before if ".norms.0." in k}
    assert changed == narrowest  # the widest copies and the stem: untouched by the narrow pass


def test_switchable_batch_norm_needs_network_scope():
    with pytest.raises(ConfigError, match="--width-switchable-bn needs --width-scope network"):
        WidthOptions(width_switchable_bn=True).validate()


def test_the_routing_gain_is_zero_where_every_width_scores_alike_and_positive_for_a_router_that_knows():
    widths = torch.tensor([0, 0, 1, 1, 1, 0])
    alike = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)  # [W, N]
    fields = routing_gain(widths, alike)
    assert fields["routing_gain"] == pytest.approx(0.0) and fields["routed_top1"] == pytest.approx(400 / 6)
    knows = torch.tensor([[1, 1, 0, 0, 0, 1], [0, 0, 1, 1, 1, 0]], dtype=torch.bool)  # each image right at its width
    fields = routing_gain(widths, knows, draws=20)
    assert fields["routed_top1"] == 100.0 and 0 < fields["random_routing_top1"] < 100.0
    assert fields["routing_gain"] == pytest.approx(100.0 - fields["random_routing_top1"])
    assert fields["width_shares"] == [0.5, 0.5] and fields["width_alone_top1"] == [50.0, 50.0]


def test_the_api_exports_the_router_and_one_static_model_per_width(tmp_path):
    model, gates = switchable_gates()
    exported = gates.export_onnx(tmp_path / "m.onnx")
    files = [tmp_path / "m.onnx", *(tmp_path / f"m.width{w}.onnx" for w in range(len(CHOICES)))]
    assert exported.executor == "routed" and exported.path == files[0] and all(f.is_file() for f in files)
    x = varied_inputs(8)
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(OrtRouted(files, 1)(x), expected, atol=1e-4, rtol=1e-4)
