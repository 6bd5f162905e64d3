from __future__ import annotations

import pytest
import torch

from dynprune.cost import CostModel, flop_counter_macs
from dynprune.models import UnknownModelError, create_model, list_models
from dynprune.sites import SiteMask, permute_site, site_width, slice_site

# resnet18 is ImageNet-style; a 64px input keeps the tests fast while exercising every layer.
SIZES = {"resnet18": 64}
ALL = list_models()


def build(name: str, in_channels: int = 3):
    torch.manual_seed(0)
    size = SIZES.get(name, 32)
    return create_model(name, in_channels, 10, size), (in_channels, size, size)


def test_registry_lists_the_zoo():
    """Every zoo model defined in ``dynprune/models`` (a function under ``@register_model``, or one registered by
    a ``register_model(...)`` call) is in the registry: the folder scan finds each file, no import list."""
    import re
    from pathlib import Path

    import dynprune.models

    defined = set()
    for path in Path(dynprune.models.__file__).parent.glob("*.py"):
        source = path.read_text()
        defined |= set(re.findall(r"@register_model\n(?:@[^\n]+\n)*def (\w+)", source))
        defined |= set(re.findall(r"^(\w+) = register_model\(", source, flags=re.M))
    assert {"resnet20", "lenet5", "mobilenetv2"} <= defined  # the pattern finds both styles of the zoo
    assert defined <= set(ALL), defined - set(ALL)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="known: .*resnet20"):
        create_model("resnet21")


@pytest.mark.parametrize("name", ALL)
def test_forward_shape_and_finite(name):
    model, shape = build(name, in_channels=1)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_dense_macs_match_flop_counter(name):
    model, shape = build(name)
    cost = CostModel.from_model(model, shape)
    assert cost.dense_macs == flop_counter_macs(model, shape)
    assert cost.dense_params == sum(p.numel() for p in model.parameters())


def test_reference_mac_counts():
    # ResNet-56 at 32x32 is ~125M MACs in the pruning literature (option-A shortcuts).
    model, shape = build("resnet56")
    assert abs(CostModel.from_model(model, shape).dense_macs / 1e6 - 125.5) < 0.5
    model, shape = build("resnet20")
    assert abs(CostModel.from_model(model, shape).dense_macs / 1e6 - 40.55) < 0.1


@pytest.mark.parametrize("name", ALL)
def test_sites_are_unique_and_resolvable(name):
    model, _ = build(name)
    sites = model.channel_sites()
    assert sites, "every zoo model declares channel sites"
    assert len({s.name for s in sites}) == len(sites)
    modules = dict(model.named_modules())
    for s in sites:
        for path in (s.producer, s.bn, *s.passthrough, *s.consumers):
            assert path is None or path in modules, f"{s.name}: {path}"


@pytest.mark.parametrize("name", ALL)
def test_slicing_a_site_matches_cost_model_and_masking(name):
    """Physically removing half of each site's channels: FlopCounterMode agrees with the cost model's formula,
    and the sliced model computes what the masked model computes."""
    model, shape = build(name)
    model.eval()
    # Give BN non-trivial statistics so that masking vs slicing is a real check.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    cost = CostModel.from_model(model, shape)
    sites = model.channel_sites()
    chosen = sites[:: max(1, len(sites) // 3)]  # a few sites per model keeps the test quick
    keep_frac, masks = {}, []
    gen = torch.Generator().manual_seed(1)
    keeps = {}
    for s in chosen:
        width = site_width(model, s)
        k = max(1, width // 2)
        idx = torch.randperm(width, generator=gen)[:k].sort().values
        keeps[s.name] = idx
        keep_frac[s.name] = k / width
        mask = torch.zeros(width)
        mask[idx] = 1
        masks.append(SiteMask(model, s, mask))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        masked_out = model(x)
    for m in masks:
        m.remove()
    for s in chosen:
        slice_site(model, s, keeps[s.name])
    with torch.no_grad():
        sliced_out = model(x)
    expected = cost.macs(keep_frac)
    assert flop_counter_macs(model, shape) == pytest.approx(expected, rel=1e-9, abs=0.5)
    assert cost.macs(keep_frac) < cost.dense_macs
    assert torch.allclose(masked_out, sliced_out, atol=1e-4, rtol=1e-4)
    assert cost.params(keep_frac) == pytest.approx(sum(p.numel() for p in model.parameters()), abs=0.5)


def test_permuting_every_site_keeps_the_outputs_and_moves_the_channels():
    model, shape = build("resnet20")
    model.eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        before = model(x)
    site = model.channel_sites()[0]
    filters = model.get_submodule(site.producer).weight.detach().clone()
    for s in model.channel_sites():
        permute_site(model, s, torch.randperm(site_width(model, s), generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)
    order = torch.randperm(site_width(model, site), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.get_submodule(site.producer).weight.detach(), filters[order])
    with pytest.raises(ValueError, match="must be a permutation of range"):
        permute_site(model, site, torch.zeros(site_width(model, site), dtype=torch.long))


def test_per_sample_masks_give_per_sample_macs():
    model, shape = build("resnet20")
    cost = CostModel.from_model(model, shape)
    site = model.channel_sites()[0]
    width = site_width(model, site)
    masks = {site.name: torch.stack([torch.ones(width), torch.zeros(width)])}
    per_sample = cost.macs_from_masks(masks)
    assert per_sample.shape == (2,)
    assert per_sample[0].item() == cost.dense_macs
    assert per_sample[1].item() == pytest.approx(cost.dense_macs - cost.site_macs(site.name))


def test_width_multiplier_shrinks_the_model():
    full = CostModel.from_model(create_model("resnet20", 3, 10, 32), (3, 32, 32)).dense_macs
    half = CostModel.from_model(create_model("resnet20", 3, 10, 32, width=0.5), (3, 32, 32)).dense_macs
    assert 0.2 * full < half < 0.3 * full
