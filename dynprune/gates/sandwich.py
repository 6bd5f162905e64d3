"""Training nested widths as DS-Net does: the sandwich rule with in-place distillation before the gates decide
(slimmable networks, Yu & Huang 2019; DS-Net's stage I), and DS-Net's online gate target after (stage II).

While the supernet phase lasts, the training forward pass runs the widest network (every gate held open) on the
task loss, and the same batch runs again at the narrowest width and at ``random`` random widths, each learning
the widest pass's softmax (its soft labels, detached): DS-Net samples largest, two random, smallest per step and
distils the others from the largest. A random pass draws one width per site, since the gates choose per site
(one width for every site at network scope, as the router chooses).

Once the gates decide, the gate target (weight ``gate_target``) runs the batch once more at the narrowest width
without gradients: an input the narrowest network classifies right should run narrowest, any other widest
(DS-Net's "sandwich gate sparsification" label); every tier logit of every site learns that 0/1 by
binary cross-entropy, while the budget term holds the mean cost. DS-Net's label asks for fewer wide inputs than
the budget allows where the narrowest network is nearly as good as the wide ones (89 % right at 0.25 of the MACs:
the router ran every input narrowest for half the run, BENCHMARKS "Width gates: a label at the budget"); the
``ranked`` label (``ranked_labels``) sends the batch's hardest inputs for the narrowest network (its highest
losses) to the first width at or above the site's density, as many as that density pays for; the ``gain``
label ranks by what that width saves instead (the narrowest network's loss minus that width's: one more pass).
Routed so, the narrowest network learns from the easy inputs only; ``narrowest`` > 0 lets the gate target's
narrow pass learn from every input too (with gradients, the routed pass's softmax as soft labels: in-place
distillation from the model as it routes), as the supernet phase's narrow pass does.

Widths are prefixes of each site's ordered channels (an ordinal estimator's tiers), set through the gate set's
fixed decisions, so the extra passes need no second copy of the model. They leave the BN running statistics
alone (momentum 0 while they run): a narrow pass's batch statistics are not the widest network's, and mixing them
in wrecked the widest network's evaluation (BENCHMARKS, "Width gates trained as a supernet"). The per-width
copies of switchable BatchNorms (``--width-switchable-bn``) are the exception: each pass trains its own width's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .module import GateSet
from .switchable_bn import switched_norms


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft labels, mean over the batch (in-place distillation's loss)."""
    return -(soft_labels * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def paid_tier(widths: torch.Tensor, density: float) -> int:
    """The first tier whose width ([T], ascending) is at or above ``density`` (the widest if none is)."""
    return int((widths < density).sum().clamp(max=widths.numel() - 1))


def ranked_labels(losses: torch.Tensor, widths: torch.Tensor, density: float) -> torch.Tensor:
    """[B] the narrowest network's per-input losses, [T] each tier's width (fraction of the site's channels,
    ascending), the site's density -> [B, T - 1] 0/1 target of every tier logit: tiers 1..j open for the
    round(q * B) highest losses, j the first tier whose width is >= density, q the share at width j that with the
    rest at the narrowest makes the mean width the density. A density at or below the narrowest: all shut."""
    labels = losses.new_zeros(losses.shape[0], widths.numel() - 1)
    if density <= widths[0]:
        return labels
    j = paid_tier(widths, density)
    share = min(1.0, (density - widths[0].item()) / (widths[j].item() - widths[0].item()))
    hardest = losses.topk(round(share * losses.shape[0])).indices
    labels[hardest, :j] = 1.0
    return labels


class Sandwich:
    def __init__(
        self, gate_set: GateSet, random: int, gate_target: float = 0.0, label: str = "correct", narrowest: float = 0.0
    ) -> None:
        if any(gate_set.tiers(s.name) is None for s in gate_set.sites):
            raise ValueError("the sandwich rule needs nested widths: an ordinal estimator (--gate width)")
        self.gate_set, self.random, self.gate_target, self.label = gate_set, random, gate_target, label
        self.narrowest_weight = narrowest

    def prefix(self, site: str, tier: int) -> torch.Tensor:
        """[G] 0/1: the site's channel groups of tiers 0..tier open (a prefix of its ordered channels)."""
        tiers = self.gate_set.tiers(site)
        return (tiers <= tier).float()

    def narrowest(self) -> dict[str, torch.Tensor]:
        return {s.name: self.prefix(s.name, 0) for s in self.gate_set.sites}

    def passes(self) -> list[tuple[str, dict[str, torch.Tensor]]]:
        """(name, site -> fixed decision) of every extra pass: the narrowest, then the random ones (the global
        RNG draws them, so a resumed run draws what the uninterrupted one would)."""
        sites = [s.name for s in self.gate_set.sites]
        out = [("narrowest", self.narrowest())]
        router = self.gate_set.router
        for i in range(self.random):
            levels = {s: int(self.gate_set.tiers(s).max()) + 1 for s in sites}
            if router is not None:  # network scope: one width for every site, as deployed
                tier = int(torch.randint(levels[router], ()))
                drawn = dict.fromkeys(sites, tier)
            else:
                drawn = {s: int(torch.randint(levels[s], ())) for s in sites}
            out.append((f"random{i}", {s: self.prefix(s, drawn[s]) for s in sites}))
        return out

    @contextlib.contextmanager
    def fixed(self, model: nn.Module) -> Iterator[None]:
        """Inside, passes run the widths set in ``gate_set.fixed_decisions``; BN running statistics stay as they
        are; the gate set's switches come back as they were."""
        gate_set = self.gate_set
        held, fixed = gate_set.force_open, gate_set.fixed_decisions
        # what the training pass left (read after the step, e.g. by a loop of one's own): the extra passes' are not it
        batch_state = tuple(dict(d) for d in (gate_set.masks, gate_set.logits, gate_set.cost_masks, gate_set.activity))
        # a switchable BN's per-width copies learn each width's statistics from its own passes (slimmable networks)
        own = switched_norms(model)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m not in own]
        momenta = [m.momentum for m in norms]
        gate_set.force_open = False
        for m in norms:
            m.momentum = 0.0  # batch statistics in the forward, running statistics untouched
        try:
            yield
        finally:
            gate_set.force_open, gate_set.fixed_decisions = held, fixed
            gate_set.masks, gate_set.logits, gate_set.cost_masks, gate_set.activity = batch_state
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum

    def terms(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        supernet: bool,
        inputs: torch.Tensor | None,
        labels: torch.Tensor | None,
        densities: Mapping[str, float] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]] | None:
        """The terms in force for the training pass just made: the supernet phase's narrow passes, then the gate
        target (None: neither is on); ``densities``: each site's density now (the ranked label's share)."""
        if not (supernet or self.gate_target > 0 or self.narrowest_weight > 0):
            return None
        if inputs is None or labels is None:
            raise ValueError("width gates run the batch again at other widths: pass extra_loss(inputs=x, labels=y)")
        # the plain model under DDP (the gate target; the supernet phase is refused under torchrun, its held-open
        # gates get no gradient): the extra pass runs without gradients, the training pass is DDP's one forward
        plain = getattr(model, "module", model)
        if supernet:
            return self.loss(plain, inputs, logits)
        return self.target_loss(plain, inputs, labels, densities or {}, logits)

    def loss(self, model: nn.Module, inputs: torch.Tensor, widest: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The extra passes' summed distillation loss from the widest pass's ``widest`` logits, and its parts."""
        soft = F.softmax(widest.detach().float(), dim=1)
        total = widest.new_zeros((), dtype=torch.float32)
        logs: dict[str, float] = {}
        with self.fixed(model):
            for name, decisions in self.passes():
                self.gate_set.fixed_decisions = decisions
                term = soft_cross_entropy(model(inputs), soft)
                total = total + term
                logs[f"sandwich_{name}"] = term.item()
        return total, logs

    def target_loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        densities: Mapping[str, float],
        routed: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The gate target for the training pass just made, BCE of every tier logit (weighted by ``gate_target``)
        against DS-Net's label (0 where the narrowest network classifies the input right, 1 elsewhere) or the
        ranked one (``ranked_labels`` at each site's density in ``densities``); with ``narrowest`` > 0, the
        narrow pass's distillation from ``routed`` (the training pass's logits) too."""
        logits = dict(self.gate_set.logits)  # the training pass's, with their graph (the narrow pass overwrites)
        learn = self.narrowest_weight > 0
        with torch.set_grad_enabled(learn and torch.is_grad_enabled()), self.fixed(model):
            self.gate_set.fixed_decisions = self.narrowest()
            narrow = model(inputs).float()
        logs: dict[str, float] = {}
        distil = narrow.new_zeros(())
        if learn:
            distil = self.narrowest_weight * soft_cross_entropy(narrow, F.softmax(routed.detach().float(), dim=1))
            logs["narrowest_loss"] = distil.item()
            narrow = narrow.detach()
        wrong = (narrow.argmax(dim=1) != labels).float()  # [B]: 1 = needs more than the narrowest
        losses = F.cross_entropy(narrow, labels, reduction="none")
        if self.label == "gain":  # rank by what the width the density pays for saves, not by the narrow loss
            sites = [site.name for site in self.gate_set.sites]
            paid = {s: paid_tier(self.tier_widths(s), densities.get(s, 1.0)) for s in sites}
            with torch.no_grad(), self.fixed(model):
                self.gate_set.fixed_decisions = {s: self.prefix(s, paid[s]) for s in sites}
                losses = losses - F.cross_entropy(model(inputs).float(), labels, reduction="none")
        terms = []
        for site, site_logits in logits.items():
            if self.label in ("ranked", "gain"):
                target = ranked_labels(losses, self.tier_widths(site), densities.get(site, 1.0))
            else:
                target = wrong[:, None].expand_as(site_logits)
            terms.append(F.binary_cross_entropy_with_logits(site_logits.float(), target))
        target = self.gate_target * torch.stack(terms).mean()
        logs |= {"gate_target_loss": target.item(), "narrowest_wrong": wrong.mean().item()}
        return target + distil, logs

    def tier_widths(self, site: str) -> torch.Tensor:
        """[T] the width of each of the site's tiers, as a fraction of its channel groups."""
        tiers = self.gate_set.tiers(site).cpu()
        return torch.stack([(tiers <= t).double().mean() for t in range(int(tiers.max()) + 1)])
