"""Nested widths (DS-Net's dynamic weight slicing, Li et al. 2021): each input runs a site at one of a few widths,
and the channels it keeps are always the first ones, a contiguous slice.

Before the gates attach, every site's channels are ordered by the L1 norm of their filters (of the ``--init``
model), so the narrowest width keeps the most important ones. A site of G channel groups is split into tiers by
``--width-choices`` (e.g. 0.25, 0.5, 0.75, 1: the first quarter of the groups, the second, ...); the site's gate
outputs one logit per tier past the first, and an input opens tiers 1..t exactly when its logits 1..t are all
>= 0: an ordinal decision, so the width grows monotonically with every logit, a global logit shift moves every
input's width the same way (the budget calibration works as for threshold gates), and the deploy path runs a
prefix of the channels (views of the weights, no per-sample gather). Training: logistic noise on the logits
(fading out over the last ``--width-noise-fade`` of the run), hard cumulative decisions in the forward pass,
straight-through to the product of sigmoid(logit / tau) in the backward; the budget loss on the MACs of the
decisions.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ...base import ConfigError, option
from ...prune.criteria import ChannelGroup, Criterion
from ...sites import permute_site
from ..estimator import Estimator, SupernetPhase, logistic_noise, straight_through
from ..switchable_bn import Route, switch_norms


@dataclasses.dataclass
class WidthOptions:
    # The choices must straddle each site's density (the target's): with 0.25, 0.5, 0.75, 1 at a 0.25 target
    # every input ran the narrowest width, l1-filter under another name (BENCHMARKS, "Width gates").
    width_choices: list[float] = option(
        [0.125, 0.25, 0.5, 1.0],
        "width: the widths a site can run at, fractions of its channels, ascending, the last 1; some below the "
        "target, some above, so inputs can differ",
    )
    width_tau: float = option(1.0, "width: temperature of the sigmoids whose product the decisions pass through")
    width_noise_fade: float = option(0.5, "width: last fraction of the run over which the logit noise fades to 0")
    width_supernet: float = option(
        0.0,
        "width: first fraction of the run that trains the nested widths as a supernet (every gate open; the "
        "narrowest and --width-random widths learn the widest's outputs), before the gates choose",
    )
    width_random: int = option(2, "width: random widths per step in the supernet phase (DS-Net: 2)")
    width_scope: Literal["site", "network"] = option(
        "site",
        "width: site (each site picks its width per input) | network (one width per input for every site, chosen "
        "by the first site's gate, DS-Net's router: the deployed model is a router over one static sub-network "
        "per width, the `routed` executor)",
    )
    width_switchable_bn: bool = option(
        False,
        "width, network scope: one BatchNorm per width after the router (switchable BN, slimmable networks), "
        "each input normalised by its width's; deploy folds each into its width's narrow model",
    )
    width_gate_target: float = option(
        0.0,
        "width: weight of DS-Net's online gate target once the gates decide (narrowest width where the narrowest "
        "network classifies the input right, else widest); 0 = off",
    )
    width_gate_label: Literal["correct", "ranked", "gain"] = option(
        "correct",
        "width: the gate target's label: correct (DS-Net: narrowest where the narrowest network is right, else "
        "widest) | ranked (the batch's highest narrowest-network losses to the first width at or above the "
        "site's density, as many as the density pays for; the rest narrowest) | gain (ranked by the loss that "
        "width saves over the narrowest: one more pass per step)",
    )
    width_narrowest_weight: float = option(
        0.0,
        "width: once the gates decide, the narrowest width also learns every input at this weight (soft labels: "
        "the routed pass's softmax), not only the inputs routed to it; 0 = off",
    )

    def validate(self) -> None:
        c = self.width_choices
        if len(c) < 2 or any(not 0 < a < b for a, b in itertools.pairwise(c)) or c[-1] != 1.0:
            raise ConfigError(f"--width-choices must be >= 2 ascending fractions in (0, 1], the last 1; got {c}")
        if self.width_tau <= 0:
            raise ConfigError(f"--width-tau must be > 0, got {self.width_tau}")
        if not 0 <= self.width_noise_fade <= 1:
            fade = self.width_noise_fade
            raise ConfigError(f"--width-noise-fade must be a fraction of the run in [0, 1], got {fade}")
        if not 0 <= self.width_supernet < 1:
            raise ConfigError(f"--width-supernet must be a fraction of the run in [0, 1), got {self.width_supernet}")
        if self.width_random < 0:
            raise ConfigError(f"--width-random must be >= 0, got {self.width_random}")
        if self.width_switchable_bn and self.width_scope != "network":
            raise ConfigError("--width-switchable-bn needs --width-scope network (one width per input for every BN)")
        if self.width_gate_target < 0:
            raise ConfigError(f"--width-gate-target must be >= 0, got {self.width_gate_target}")
        if self.width_gate_label != "correct" and self.width_gate_target == 0:
            raise ConfigError(f"--width-gate-label {self.width_gate_label} needs --width-gate-target > 0 (its weight)")
        if self.width_narrowest_weight < 0:
            raise ConfigError(f"--width-narrowest-weight must be >= 0, got {self.width_narrowest_weight}")


#: shared gate options that act on one logit per channel group, which width gates do not have
PER_GROUP_OPTIONS = {
    "gate_init": "open",
    "guide_weight": 0.0,
    "gate_shape_weight": 0.0,
    "gate_rate_weight": 0.0,  # a per-channel open rate: the first tier is always open
    "gate_usage_weight": 0.0,  # likewise
    "gate_density": "global",
}


class Width(Estimator):
    name = "width"
    Options = WidthOptions
    summary = "one of --width-choices per input and site: the first w channels (by --gate-criterion), ordinal"

    def __init__(self, options: WidthOptions | None = None) -> None:
        super().__init__(options)
        self.noise = 1.0
        self._tiers: dict[tuple[int, torch.device], torch.Tensor] = {}  # per site size and device, built once
        self.route = Route()  # the router's choice in the current pass, read by switchable BatchNorms

    def schedule(self, progress: float) -> None:
        fade = self.options.width_noise_fade
        self.noise = 1.0 if fade == 0 or progress <= 1 - fade else max(0.0, (1.0 - progress) / fade)

    def logit_count(self, groups: int) -> int:
        return len(self.options.width_choices) - 1

    def tiers(self, groups: int, device: torch.device | None = None) -> torch.Tensor:
        """[groups] tier of each group: how many choices' prefixes end at or before it (on a small site two
        choices can end at the same group; the tier between them is then empty)."""
        key = (groups, torch.device(device or "cpu"))
        if key not in self._tiers:
            ends = torch.tensor([max(1, round(c * groups)) for c in self.options.width_choices])
            self._tiers[key] = (torch.arange(groups)[:, None] >= ends[None, :]).sum(dim=1).to(key[1])
        return self._tiers[key]

    def expand(self, decisions: torch.Tensor, groups: int) -> torch.Tensor:
        return decisions.index_select(1, self.tiers(groups, decisions.device))

    def decide(self, logits: torch.Tensor, training: bool, density: float) -> torch.Tensor:
        """[B, tiers - 1] logits -> [B, tiers] open tiers (the first always open)."""
        first = logits.new_ones(logits.shape[0], 1)
        if not training:  # no negative logit so far (cumsum, not cumprod: ONNX exports it)
            return torch.cat([first, ((logits < 0).cumsum(dim=1) == 0).to(logits.dtype)], dim=1)
        if self.noise > 0:
            logits = logits + self.noise * logistic_noise(logits.shape, logits)
        soft = torch.sigmoid(logits / self.options.width_tau)
        hard = (soft >= 0.5).to(soft.dtype).cumprod(dim=1)
        return torch.cat([first, straight_through(hard, soft.cumprod(dim=1))], dim=1)

    @torch.no_grad()
    def prepare_sites(self, model: nn.Module, sites: Sequence[Any], rank: Criterion) -> None:
        for site in sites:  # the narrowest width keeps the channels ranked highest (default: largest L1 filters)
            permute_site(model, site, rank(ChannelGroup.of(model, site)).argsort(descending=True, stable=True))
        if self.options.width_switchable_bn:
            switch_norms(model, sites[0].producer, len(self.options.width_choices), self.route)

    def on_route(self, widths: torch.Tensor | None) -> None:
        self.route.index = widths

    def supernet_phase(self) -> SupernetPhase | None:
        o = self.options
        if o.width_supernet == 0 and o.width_gate_target == 0 and o.width_narrowest_weight == 0:
            return None
        target, label, narrowest = o.width_gate_target, o.width_gate_label, o.width_narrowest_weight
        return SupernetPhase(o.width_supernet, o.width_random, target, label, narrowest)

    def shares_decision(self) -> bool:
        return self.options.width_scope == "network"

    def check_gate_options(self, options: Any) -> None:
        for name, allowed in PER_GROUP_OPTIONS.items():
            if getattr(options, name) != allowed:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"--gate width has one logit per width, not per channel: {flag} must be {allowed}")
        if options.gate_boost:
            raise ConfigError("--gate width: --gate-boost scales single channels; leave it off")

    def check_densities(self, densities: Mapping[str, float]) -> None:
        narrowest, largest = self.options.width_choices[0], max(densities.values(), default=1.0)
        if largest <= narrowest:  # measured: every input then ran the narrowest width (BENCHMARKS, "Width gates")
            raise ConfigError(
                f"--width-choices: the narrowest width {narrowest:g} is not below the sites' density {largest:.3f} "
                "that meets --target-macs, so every input would run it (static pruning); add a narrower choice"
            )

    def logs(self) -> dict[str, float]:
        return {"noise": self.noise}


ESTIMATOR = Width
