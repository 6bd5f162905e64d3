"""Static pruning methods, found by name (``--prune NAME``).

Structured methods choose channels per site (``keep`` masks); unstructured methods mask single weights with
``torch.nn.utils.prune``'s own functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from ..base import ConfigError
from ..cost import CostModel
from ..registry import Registry
from ..sites import ChannelSite, site_width
from .criteria import CRITERIA, ChannelGroup, Criterion, L2Norm, keep_lowest_removed, lowest
from .masks import apply_channel_mask, current, prunable_weights
from .process import PruneProcess, ScheduledPruning
from .ratios import removed
from .sfp import SoftFilterPruning


@dataclass(frozen=True)
class Pruner:
    name: str
    structured: bool
    apply: Callable[..., None]  # (model, sites, ratios, cost) -> None
    description: str
    # (model, cost) -> (sparsity -> nonzero-weight MACs / dense), for methods whose per-layer sparsity varies
    macs_curve: Callable[[nn.Module, CostModel], Callable[[float], float]] | None = None
    process: type[PruneProcess] = field(default=ScheduledPruning)  # how the masks evolve over the fine-tune
    #: pruners whose ranking is a parameter (sfp, global-filter): criterion class -> the pruner ranking by it
    ranked_by: Callable[[type], Pruner] | None = None
    criterion: str | None = None  # the criterion it ranks by, for those

    def with_criterion(self, name: str) -> Pruner:
        """This pruner ranking channels by the registered criterion ``name`` (``--prune-criterion``)."""
        if self.ranked_by is None:
            takes = ", ".join(n for n, p in PRUNERS.items() if p.ranked_by is not None)
            raise ConfigError(
                f"--prune-criterion is for the pruners that rank by a chosen criterion ({takes}); --prune "
                f"{self.name} is its own criterion"
            )
        if name not in CRITERIA:
            raise ConfigError(f"--prune-criterion got {name!r}; allowed: {', '.join(CRITERIA.names())}")
        return self.ranked_by(CRITERIA[name])


PRUNERS: Registry[Pruner] = Registry("pruning method")


def get_pruner(name: str) -> Pruner:
    return PRUNERS.get(name)


# ------------------------------------------------------------------------------------------- structured
def filter_scores(model: nn.Module, site: ChannelSite, criterion: Criterion) -> torch.Tensor:
    return criterion(ChannelGroup.of(model, site))


def filter_keep_indices(
    model: nn.Module, sites: Sequence[ChannelSite], ratios: Mapping[str, float], criterion: Criterion
) -> dict[str, torch.Tensor]:
    """Per site, the sorted indices of the filters kept (all scored before any is removed, as the masks are)."""
    keep = {}
    for site in sites:
        scores = filter_scores(model, site, criterion)
        keep[site.name] = keep_lowest_removed(scores, removed(len(scores), ratios[site.name])).nonzero().flatten()
    return keep


def _per_site(criterion_factory: Callable[[], Criterion]):
    def apply(model: nn.Module, sites: Sequence[ChannelSite], ratios: Mapping[str, float], cost: CostModel) -> None:
        criterion = criterion_factory()
        for site in sites:
            scores = filter_scores(model, site, criterion)
            apply_channel_mask(model, site, keep_lowest_removed(scores, removed(len(scores), ratios[site.name])))

    return apply


for _name, _criterion in CRITERIA.items():
    PRUNERS.add(Pruner(_name, True, _per_site(_criterion), _criterion.description))


def _sfp(criterion: type) -> Pruner:
    """SFP ranking by ``criterion`` (the paper's: L2): its process zeroes the lowest-ranked filters softly every
    epoch; its final masks are that criterion's per-site masks (one-shot use, e.g. sensitivity)."""
    return Pruner(
        "sfp",
        True,
        _per_site(criterion),
        f"soft filter pruning: zero the lowest-ranked filters ({criterion.name}) every epoch, regrowth allowed, "
        "masked for the last quarter",
        process=SoftFilterPruning,
        ranked_by=_sfp,
        criterion=criterion.name,
    )


PRUNERS.add(_sfp(L2Norm))


def global_filter_keep(
    model: nn.Module, sites: Sequence[ChannelSite], fraction: float, criterion: Criterion | None = None
) -> dict[str, torch.Tensor]:
    """Rank channels of all sites together by ``criterion`` (default L2 norm) divided by the site's mean score
    (raw scores are not comparable across layers) and drop the lowest ``fraction`` of them, keeping >= 1
    channel per site."""
    criterion = criterion or L2Norm()
    scores = {s.name: filter_scores(model, s, criterion) for s in sites}
    normed = torch.cat([v / v.mean().clamp(min=1e-12) for v in scores.values()])
    owner = torch.cat([torch.full((len(v),), i) for i, v in enumerate(scores.values())])
    n_remove = round(fraction * len(normed))
    keep = {name: torch.ones_like(v) for name, v in scores.items()}
    names = list(scores)
    offsets = torch.tensor([0] + [len(v) for v in scores.values()]).cumsum(0)
    for flat in lowest(normed, len(normed)).tolist():
        if n_remove == 0:
            break
        site = names[owner[flat]]
        if keep[site].sum() > 1:
            keep[site][flat - offsets[owner[flat]]] = 0
            n_remove -= 1
    return keep


def _global_fraction(model: nn.Module, sites: Sequence[ChannelSite], ratios: Mapping[str, float]) -> float:
    # The ratios fix how many channels go in total (their width-weighted mean, unrounded, so the MAC curve moves
    # one channel at a time); the ranking decides where they come from.
    widths = {s.name: site_width(model, s) for s in sites}
    return sum(widths[s.name] * ratios[s.name] for s in sites) / sum(widths.values())


def _global_filter(criterion: type) -> Pruner:
    """global-filter ranking every site's channels together by ``criterion`` (default: L2)."""

    def macs_curve(model: nn.Module, cost: CostModel) -> Callable[[float], float]:
        """Structured MACs / dense after global-filter at a uniform ``ratio``: where the ranking takes the
        channels from decides the MACs (a channel of a 32x32 layer costs more than one of an 8x8 layer), so a
        target must be solved on this curve, not on the uniform ratio's MACs."""
        sites = model.channel_sites()

        def at(ratio: float) -> float:
            fraction = _global_fraction(model, sites, dict.fromkeys(cost.site_widths, ratio))
            keep = global_filter_keep(model, sites, fraction, criterion())
            return cost.macs({name: float(k.mean()) for name, k in keep.items()}) / cost.dense_macs

        return at

    def apply(model: nn.Module, sites: Sequence[ChannelSite], ratios: Mapping[str, float], cost: CostModel) -> None:
        keep = global_filter_keep(model, sites, _global_fraction(model, sites, ratios), criterion())
        for site_name, site_keep in keep.items():
            apply_channel_mask(model, next(s for s in sites if s.name == site_name), site_keep)

    return Pruner(
        "global-filter",
        True,
        apply,
        f"channels of all sites ranked together (per-layer normalised {criterion.name})",
        macs_curve=macs_curve,
        ranked_by=_global_filter,
        criterion=criterion.name,
    )


PRUNERS.add(_global_filter(L2Norm))


# ------------------------------------------------------------------------------------------- unstructured
def _layer_ratio(ratios: Mapping[str, float]) -> float:
    # Unstructured methods use one sparsity for every layer: the (uniform) ratio given.
    values = set(ratios.values())
    if len(values) != 1:
        raise ValueError("unstructured pruning takes one --ratio (or --target-macs), not per-site --ratios")
    return values.pop()


def _l1_unstructured(model, sites, ratios, cost) -> None:
    amount = _layer_ratio(ratios)
    for module, name in prunable_weights(model):
        tprune.l1_unstructured(module, name, amount=amount)


PRUNERS.add(Pruner("l1-unstructured", False, _l1_unstructured, "per layer, zero the weights of smallest magnitude"))


def _random_unstructured(model, sites, ratios, cost) -> None:
    amount = _layer_ratio(ratios)
    for module, name in prunable_weights(model):
        tprune.random_unstructured(module, name, amount=amount)


PRUNERS.add(Pruner("random-unstructured", False, _random_unstructured, "per layer, zero random weights"))


def _global_macs_curve(model: nn.Module, cost: CostModel) -> Callable[[float], float]:
    """Nonzero-weight MACs / dense if the ``amount`` smallest-magnitude weights of all layers are zeroed."""
    names = {id(m): p for p, m in model.named_modules()}
    layer_macs = {layer.name: layer.macs for layer in cost.layers}
    weights = [(names[id(m)], current(m, n).detach().abs().flatten()) for m, n in prunable_weights(model)]
    ordered = torch.cat([w for _, w in weights]).sort().values
    pruned = {name for name, _ in weights}
    untouched = sum(m for name, m in layer_macs.items() if name not in pruned)

    def at(amount: float) -> float:
        k = round(amount * len(ordered))
        threshold = ordered[k - 1] if k > 0 else -1.0
        kept = sum(layer_macs.get(name, 0) * float((w > threshold).float().mean()) for name, w in weights)
        return (kept + untouched) / cost.dense_macs

    return at


def _global_unstructured(model, sites, ratios, cost) -> None:
    tprune.global_unstructured(
        prunable_weights(model), pruning_method=tprune.L1Unstructured, amount=_layer_ratio(ratios)
    )


PRUNERS.add(
    Pruner(
        "global-unstructured",
        False,
        _global_unstructured,
        "one magnitude threshold over all conv and linear weights",
        macs_curve=_global_macs_curve,
    )
)
