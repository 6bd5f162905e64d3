"""Losses that keep gates input-dependent.

The activation guide: per-input targets for the gates from the network's own activations (FTWT, Elkerdawy et al.
2022; FBS's saliency idea).

Per image and site, the target opens the k channel groups with the largest mean ReLU activation before the mask
(k = the site's density now), so from the first step the gates learn *which* channels this input needs, not one
set for all inputs. The loss is binary cross-entropy between the gate logits and these (detached) targets, on
for the first ``until`` of the run (FTWT switches its mask loss off after half of training). During the first
``open_epochs`` the gates are held open (the dense forward pass) and learn from the guide alone, so the per-input
choice is already informed when the gates start to cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .beta import BetaPrior
from .density import kept_groups

#: tie-breaks between equal open rates stay below 1 / batch size for batches of up to 10,000 inputs
TIE_SCALE = 1e-5


def activity_targets(activity: torch.Tensor, density: float) -> torch.Tensor:
    """[B, G] activity -> [B, G] 0/1: each row's k = round(density x G) most active groups."""
    k = kept_groups(activity.shape[1], density)
    return torch.zeros_like(activity).scatter_(1, activity.topk(k, dim=1).indices, 1.0)


def guide_loss(
    logits: Mapping[str, torch.Tensor], activity: Mapping[str, torch.Tensor], densities: Mapping[str, float]
) -> torch.Tensor:
    """Mean over sites of BCE(logits, activity targets); every mapping is keyed by site, logits/activity [B, G]."""
    losses = [
        F.binary_cross_entropy_with_logits(logits[site].float(), activity_targets(activity[site], densities[site]))
        for site in activity
    ]
    return torch.stack(losses).mean()


def gate_rate_loss(rates: Mapping[str, torch.Tensor], densities: Mapping[str, float]) -> torch.Tensor:
    """ConvNet-AIG's target-rate term, per gate: mean over every gate of (its open rate over the batch, [C] per
    site - its site's density)^2. Zero when each channel opens for exactly the density's share of the batch; a
    channel open for every input or for none is pushed away from that, so the term rewards conditional gates (a
    site-level budget is met just as well by one fixed set)."""
    terms = [((rate - densities[site]) ** 2) for site, rate in rates.items()]  # [C] each
    return torch.cat(terms).mean()


def usage_floor_loss(
    rates: Mapping[str, torch.Tensor],
    floor: float,
    share: float,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """A floor under how many channels of each site decide per input (a Switch-style load term, aimed at the
    fewest channels that make a site conditional). A channel's conditionality is min(rate, 1 - rate) ([C] open
    rates over the batch): the share of inputs that it treats the other way from most. Per site, the
    ceil(share x C) most conditional channels (ties broken by ``scores``, [C] per site, e.g. the mean gate logit:
    a shut channel with a higher score, or an open one with a lower, is closer to deciding) should each be open
    for at least ``floor`` of the inputs and shut for at least ``floor``; the term is the mean over them of
    relu(floor - conditionality) / floor (0 once they are, 1 for a channel open for every input or for none).
    Unlike ConvNet-AIG's rate term it leaves the other channels, and how often the chosen ones open inside the
    band, to the task loss."""
    terms = []
    for site, rate in rates.items():
        m = min(rate.numel(), math.ceil(share * rate.numel() - 1e-9))
        conditionality = torch.minimum(rate, 1.0 - rate)
        if scores is None:
            tie = torch.zeros_like(rate)
        else:
            open_score = torch.sigmoid(scores[site].detach().float())
            tie = torch.where(rate.detach() >= 0.5, 1.0 - open_score, open_score)
        key = conditionality.detach() + TIE_SCALE * tie  # below one input's share of any batch: orders ties only
        chosen = conditionality[key.topk(m).indices]
        terms.append(F.relu(floor - chosen) / floor)
    return torch.cat(terms).mean()


def batch_shaping_loss(
    logits: Mapping[str, torch.Tensor], prior: BetaPrior, sites: Sequence[str] | None = None
) -> torch.Tensor:
    """Batch-shaping (Bejnordi et al. 2020): each gate's probabilities over the batch (sigmoid of its logits;
    the sites' [B, G] side by side in the order of ``sites``, default ``logits``'s, which is ``prior``'s column
    order) matched to its Beta prior by the Cramér-von Mises distance between the batch's empirical CDF and the
    prior's, mean over samples and gates. With a Beta(d, 1 - d) prior (mean d, mass near 0 and 1) a gate scores
    best when it is decisively open for a share d of the inputs and decisively shut for the rest: a gate open
    for every input, or half-open for all, scores worse."""
    order = list(logits) if sites is None else sites
    probabilities = torch.cat([torch.sigmoid(logits[s].float()) for s in order], dim=1)  # [B, G]
    ordered, _ = probabilities.sort(dim=0)
    n = ordered.shape[0]
    ecdf = torch.arange(1, n + 1, dtype=ordered.dtype, device=ordered.device) / (n + 1)
    return ((ecdf[:, None] - prior.cdf(ordered)) ** 2).mean()
