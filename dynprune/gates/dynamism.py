"""How much the gates' input-dependence is worth: conditional channels, class maps and the frozen-gate ablation.

Distinct channel sets (``sets.py``) say whether gates change their decision at all; these figures say how much
and what it buys:

- ``site_conditional_share``: per site, the share of channels open for more than 1 % and fewer than 99 % of the
  test images (batch-shaping's split of gates into always-on, always-off and conditional); ``conditional_share``
  is their mean.
- ``dynamic_gain``: test top-1 minus ``static_ablation_top1``, the test top-1 of the same model with every site's
  gates replaced by one fixed set, the k channel groups it opened most often on the validation split (k = its mean
  open count there; no retraining). Gates that open one set per site give exactly 0; a positive gain is the
  accuracy the per-input *channel choice* carries (a boosted gate's per-input scale stays on in the ablation).
  Nested widths (``--gate width``) are frozen to the width choice nearest that count, one they were trained at.
- ``site_class_spread``: per site, the mean over channels of the standard deviation across classes of the class
  open rates (ConvNet-AIG's class x gate map, summarised): 0 when every class opens the same channels as often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .module import GateSet

CONDITIONAL_LOW, CONDITIONAL_HIGH = 0.01, 0.99  # open for more than 1 % and fewer than 99 % of the images
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (images, labels) per batch, as the run's loaders give them
MacsRatio = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]  # site -> [B, C] masks  =>  [B] MACs / dense


@dataclass
class OpenCounts:
    """One evaluation pass: per site and class, how many images opened each channel group."""

    per_class: dict[str, torch.Tensor]  # site -> [K, G] count of class-k images that opened group g
    class_sizes: torch.Tensor  # [K] images per class
    correct: int
    macs_sum: float  # sum over images of MACs / dense MACs

    @property
    def images(self) -> int:
        return int(self.class_sizes.sum().item())

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / max(self.images, 1)

    def open_rates(self) -> dict[str, torch.Tensor]:
        """site -> [G] share of all images that opened each group."""
        return {site: counts.sum(dim=0) / max(self.images, 1) for site, counts in self.per_class.items()}

    def class_open_rates(self) -> dict[str, torch.Tensor]:
        """site -> [K, G] share of each class's images that opened each group (0 for a class never seen)."""
        sizes = self.class_sizes.clamp(min=1).unsqueeze(1)
        return {site: counts / sizes for site, counts in self.per_class.items()}


@torch.no_grad()
def count_open(
    model: nn.Module,
    gate_set: GateSet,
    loader: Batches,
    num_classes: int,
    macs_ratio: MacsRatio,
    amp_dtype: torch.dtype | None = None,
) -> OpenCounts:
    """Runs ``model`` (eval mode, under the run's autocast ``amp_dtype`` like its test pass, so the decisions are
    the ones result.json's top-1 saw) over ``loader`` and counts each site's open groups per class;
    ``macs_ratio`` maps the pass's masks to per-sample MACs / dense [B]."""
    was_training = model.training
    model.eval()
    per_class: dict[str, torch.Tensor] = {}
    class_sizes = torch.zeros(num_classes, dtype=torch.float64)
    correct, macs_sum = 0, 0.0
    for x, y in loader:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        y = y.cpu()
        correct += (logits.argmax(1).cpu() == y).sum().item()
        class_sizes += torch.bincount(y, minlength=num_classes).double()
        macs_sum += float(macs_ratio(gate_set.masks).sum())
        for site in gate_set.sites:
            gate = gate_set.gate(site.name)
            mask = gate_set.masks[site.name].detach().cpu().double()  # [B, C]
            groups = mask.view(mask.shape[0], gate.groups, -1)[:, :, 0]  # [B, G]: a group's channels agree
            counts = per_class.setdefault(site.name, torch.zeros(num_classes, gate.groups, dtype=torch.float64))
            counts.index_add_(0, y, groups)
    model.train(was_training)
    return OpenCounts(per_class, class_sizes, correct, macs_sum)


def conditional_share(open_rates: torch.Tensor) -> float:
    """Share of the groups of one site (rates [G] over a pass) that are neither always on nor always off."""
    conditional = (open_rates > CONDITIONAL_LOW) & (open_rates < CONDITIONAL_HIGH)
    return conditional.double().mean().item()


def class_spread(class_rates: torch.Tensor, class_sizes: torch.Tensor) -> float:
    """Mean over a site's groups of the std across the classes present of their open rates ([K, G] -> float)."""
    present = class_rates[class_sizes > 0]
    if present.shape[0] < 2:
        return 0.0
    return present.std(dim=0, unbiased=False).mean().item()


def frozen_sets(
    val_rates: dict[str, torch.Tensor], tiers: Mapping[str, torch.Tensor | None] | None = None
) -> dict[str, torch.Tensor]:
    """site -> [G] 0/1: the round(mean open count) groups opened most often (ties: the lower index first). A
    site of nested widths (``tiers``: each group's tier) is frozen to the width choice nearest its mean open count
    (ties: the wider), a prefix the model was trained at: k groups between two choices are a width it never ran."""
    frozen = {}
    for site, rates in val_rates.items():
        site_tiers = (tiers or {}).get(site)
        if site_tiers is not None:
            frozen[site] = nearest_width(rates.sum().item(), site_tiers)
            continue
        k = round(rates.sum().item())
        order = sorted(range(rates.numel()), key=lambda g: (-rates[g].item(), g))  # deterministic on ties
        fixed = torch.zeros(rates.numel())
        fixed[order[:k]] = 1.0
        frozen[site] = fixed
    return frozen


def nearest_width(open_groups: float, tiers: torch.Tensor) -> torch.Tensor:
    """[G] 0/1 prefix of the width choice whose group count is nearest ``open_groups`` (ties: the wider)."""
    tiers = tiers.cpu()
    ends = [int((tiers <= t).sum()) for t in range(int(tiers.max()) + 1)]
    chosen = min(range(len(ends)), key=lambda t: (abs(ends[t] - open_groups), -t))
    return (tiers <= chosen).float()


def measure_dynamism(
    model: nn.Module,
    gate_set: GateSet,
    val_loader: Batches,
    test_loader: Batches,
    num_classes: int,
    macs_ratio: MacsRatio,
    amp_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(result.json's dynamism fields, site -> [K, G] class open rates on the test split for the class maps).
    Three passes: test (the model as it is), validation (which sets to freeze), test with the frozen sets."""
    test = count_open(model, gate_set, test_loader, num_classes, macs_ratio, amp_dtype)
    val = count_open(model, gate_set, val_loader, num_classes, macs_ratio, amp_dtype)
    gate_set.fixed_decisions = frozen_sets(val.open_rates(), {s.name: gate_set.tiers(s.name) for s in gate_set.sites})
    try:
        frozen = count_open(model, gate_set, test_loader, num_classes, macs_ratio, amp_dtype)
    finally:
        gate_set.fixed_decisions = {}  # the saved model decides per input again
    shares = {site: conditional_share(rates) for site, rates in test.open_rates().items()}
    class_rates = test.class_open_rates()
    fields = {
        "site_conditional_share": shares,
        "conditional_share": sum(shares.values()) / max(len(shares), 1),
        "site_class_spread": {site: class_spread(r, test.class_sizes) for site, r in class_rates.items()},
        "dynamism_top1": test.top1,
        "static_ablation_top1": frozen.top1,
        "static_ablation_macs_ratio": frozen.macs_sum / max(frozen.images, 1),
        "dynamic_gain": test.top1 - frozen.top1,
    }
    return fields, class_rates
