"""Where gates start and where calibration moves them: l1-filter's choice as the first decisions, and per-site
logit shifts found by a joint bisection."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..prune.criteria import ChannelGroup, Criterion, L1Norm, keep_lowest_removed
from .density import kept_groups
from .module import GateSet


@torch.no_grad()
def init_gates_like_l1_filter(
    model: nn.Module,
    gate_set: GateSet,
    densities: Mapping[str, float],
    bias: float,
    pool: float = 1.0,
    core: float | None = None,
    criterion: Criterion | None = None,
    pool_min: float = 0.0,
) -> None:
    """Gate biases from a criterion's ranking of each site's channel groups (default l1-filter's; k = groups kept
    at its density):

    - ``pool`` = 1, ``core`` None: open (+``bias``) on exactly the k groups l1-filter keeps, closed (-``bias``) on
      the rest: the dense model's own preference as the first decisions; in a short fine-tune the gates never
      leave it (BENCHMARKS, "Are the gates dynamic?").
    - ``pool`` > 1, ``core`` None: the top ``pool`` x k groups open with equal biases, a candidate pool in which
      the input-dependent part chooses from the first step.
    - ``core`` in [0, 1]: the top ``core`` x k groups open (+``bias``), the candidates up to ``pool`` x k
      undecided (bias 0: the input decides), the rest closed: a static core and a dynamic margin.

    ``pool_min``: the candidates are at least that share of the site's groups, whatever its k.
    """
    rank = criterion or L1Norm()
    for site in gate_set.sites:
        gate = gate_set.gate(site.name)
        scores = rank(ChannelGroup.of(model, site)).view(gate.groups, -1).sum(dim=1)  # [G]
        density = densities[site.name]
        pool_share = min(1.0, max(density * pool, pool_min))
        candidates = keep_lowest_removed(scores, gate.groups - kept_groups(gate.groups, pool_share))
        biases = torch.where(candidates > 0, bias if core is None else 0.0, -bias)
        if core is not None and core > 0:
            held = keep_lowest_removed(scores, gate.groups - kept_groups(gate.groups, density * core))
            biases = torch.where(held > 0, bias, biases)
        gate.fc2.bias.copy_(biases)


def quantile_shifts(
    logits_at: Callable[[dict[str, float]], dict[str, torch.Tensor]],
    densities: Mapping[str, float],
    tolerance: float = 0.02,
    max_passes: int | None = None,
) -> dict[str, float]:
    """Per-site logit shifts that open each site's ``density`` fraction of the validation decisions (ManiDP
    resets per-layer thresholds to a remain rate the same way): one pass collects every site's logits, each
    site's shift moves its (1 - density) quantile to 0. A site's inputs depend on the sites before it, so the
    pass is repeated with the new shifts until every site is within ``tolerance`` (a fixed-point iteration: at
    worst one more site settles per pass, so at most sites + 1 passes; a trained model settles in 2-3)."""
    shifts = dict.fromkeys(densities, 0.0)
    for _ in range(max_passes or len(densities) + 1):
        logits = logits_at(shifts)  # site -> all logits of the pass, current shifts included
        rates = {site: (logits[site] >= 0).float().mean().item() for site in densities}
        if all(abs(rates[site] - d) <= tolerance for site, d in densities.items()):
            break
        for site, density in densities.items():
            shifts[site] -= open_threshold(logits[site], density)
    return shifts


def open_threshold(logits: torch.Tensor, density: float) -> float:
    """The threshold t with ``(logits >= t).mean()`` as close to ``density`` as the values allow: midway between
    two neighbouring distinct values, so no logit sits on it. Ties matter: a gate whose hidden ReLUs are all off for
    an input outputs its bias alone, so many inputs can share one logit per channel (seen: 86% of a site's inputs),
    and a plain quantile that lands on such a value opens the whole tied block."""
    values = logits.detach().double().flatten().sort().values  # ascending, [N]
    n = values.numel()
    want_closed = round((1.0 - density) * n)  # the first `want_closed` sorted values should fall below t
    if want_closed <= 0:
        return values[0].item() - 1.0
    if want_closed >= n:
        return values[-1].item() + 1.0
    # the distinct values' boundaries: a cut can only fall where values[i - 1] < values[i]
    cuts = torch.nonzero(values[1:] > values[:-1]).flatten() + 1  # [C] indices i with a change just before
    if cuts.numel() == 0:  # every logit equal: all open or all closed, whichever is closer
        return values[0].item() - 1.0 if density >= 0.5 else values[0].item() + 1.0
    i = cuts[(cuts - want_closed).abs().argmin()].item()
    return 0.5 * (values[i - 1].item() + values[i].item())
