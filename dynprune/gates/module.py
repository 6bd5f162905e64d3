"""Channel gates attached to a model's channel sites through hooks (no zoo model needs to know about gates).

For each site a small network reads the producer's input, global-average-pools it and predicts one logit per
channel group: GAP -> Linear -> BN -> ReLU -> Linear (as in DGNet / ConvNet-AIG). The decision [B, C] then
multiplies the site's channels at its mask point, so a closed channel is zero in the producer's output and in
every consumer's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from einops import repeat
from torch import nn

from ..prune.criteria import Criterion, L1Norm
from ..sites import NO_SITES, ChannelSite, SiteMask, get_module, site_width
from .estimator import Estimator


class ChannelGate(nn.Module):
    def __init__(
        self,
        in_channels: int,
        channels: int,
        groups: int,
        reduction: int,
        bias_init: float,
        boost: bool = False,
        logits: int | None = None,
    ) -> None:
        super().__init__()
        hidden = max(4, in_channels // reduction)
        self.channels, self.groups = channels, groups
        self.fc1 = nn.Linear(in_channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, groups if logits is None else logits)  # default: one logit per group
        nn.init.normal_(self.fc2.weight, std=0.01)
        nn.init.constant_(self.fc2.bias, bias_init)  # sigmoid(2) = 0.88: gates start (almost) all open
        # Feature boosting (FBS): a per-input scale 1 + tanh(.) in (0, 2) of the kept channels, from the same hidden
        # layer; zero-initialised, so a boosted gate starts as the plain 0/1 gate.
        self.boost = nn.Linear(hidden, groups) if boost else None
        if self.boost is not None:
            nn.init.zeros_(self.boost.weight)
            nn.init.zeros_(self.boost.bias)
        self.scale: torch.Tensor | None = None  # [B, groups] of the last forward (boosted gates only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # [B, C_in]
        hidden = self.act(self.bn(self.fc1(pooled)))
        if self.boost is not None:
            self.scale = 1.0 + torch.tanh(self.boost(hidden))  # [B, groups]
        return self.fc2(hidden)  # [B, groups] logits


class GateSet(nn.Module):
    """All gates of a model; holds the latest per-sample masks [B, C] per site for losses and accounting."""

    def __init__(
        self,
        model: nn.Module,
        sites: Sequence[ChannelSite],
        estimator: Estimator,
        group_size: int = 1,
        reduction: int = 4,
        bias_init: float = 2.0,
        boost: bool = False,
        rank: Criterion | None = None,
    ) -> None:
        super().__init__()
        if not sites:
            raise ValueError(NO_SITES)
        # A gate pools its producer's input feature map; a Linear producer has none, so its site stays dense.
        self.skipped = {
            s.name: f"its producer {s.producer} is a Linear layer (gates read a feature map); the site stays dense"
            for s in sites
            if isinstance(get_module(model, s.producer), nn.Linear)
        }
        self.sites = [s for s in sites if s.name not in self.skipped]
        if not self.sites:
            raise ValueError("no channel site can be gated: every site's producer is a Linear layer")
        self.estimator = estimator
        # before any hook holds a layer the estimator may replace
        estimator.prepare_sites(model, self.sites, rank or L1Norm())
        self.force_open = False
        self.densities: dict[str, float] = {}  # per-site target open fraction (fixed-count estimators use it)
        self.logit_shift = 0.0  # added to every logit; calibration searches it, then folds it into the biases
        self.site_shifts: dict[str, float] = {}  # per-site calibration shifts (--gate-density uniform / FILE)
        #: site -> [G] 0/1: a fixed decision for every input in place of the gate's (the frozen-gate ablation)
        self.fixed_decisions: dict[str, torch.Tensor] = {}
        #: while True, each site's pre-mask activity (mean ReLU activation per channel group, [B, G], detached) is
        #: kept in ``activity``: the per-input targets of the activation guide (``gates/guide.py``)
        self.capture_activity = False
        self.activity: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.cost_masks: dict[str, torch.Tensor] = {}  # what the training budget counts (the estimator says)
        self.logits: dict[str, torch.Tensor] = {}
        self.gates = nn.ModuleDict()
        #: sites a boosted gate set leaves unboosted: their channels pass a channel-wise layer after the producer
        self.unboosted = [s.name for s in self.sites if boost and s.passthrough]
        self._site_masks: dict[str, SiteMask] = {}
        #: one decision for every site (``estimator.shares_decision``): the first site's gate routes, the others
        #: take its (logits, decisions) of the current forward
        self.router = self.sites[0].name if estimator.shares_decision() else None
        self._routed: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._handles = []
        self._attach_all(model, group_size, reduction, bias_init, boost)

    def _attach_all(self, model: nn.Module, group_size: int, reduction: int, bias_init: float, boost: bool) -> None:
        for site in self.sites:
            # the router decides for the whole network from the stem's few channels: its hidden layer as wide as
            # its input, else many inputs find every hidden unit off, share the bias as their logits and are routed
            # as one block that no calibration shift can split (BENCHMARKS.md, "Width gates at network scope")
            site_reduction = 1 if site.name == self.router else reduction
            self._attach(model, site, group_size, site_reduction, bias_init, boost and not site.passthrough)
        if self.router is not None:  # each forward pass starts without a routed decision: none is carried over
            self._handles.append(model.register_forward_pre_hook(self._forget_route))

    def _attach(
        self, model: nn.Module, site: ChannelSite, group_size: int, reduction: int, bias_init: float, boosted: bool
    ) -> None:
        """One site's gate (boosted: deploy scales the producer's output, the masked point), its mask and hooks."""
        producer = get_module(model, site.producer)
        width = site_width(model, site)
        group = _group_size(width, group_size)
        groups = width // group
        logits = self.estimator.logit_count(groups)
        gate = ChannelGate(producer.in_channels, width, groups, reduction, bias_init, boosted, logits)
        self.gates[_key(site.name)] = gate
        mask_point = get_module(model, site.mask_point)  # runs before the SiteMask hook: sees every channel
        self._handles.append(mask_point.register_forward_hook(self._activity_hook(site), prepend=True))
        self._site_masks[site.name] = SiteMask(model, site, torch.ones(width))
        self._handles.append(producer.register_forward_pre_hook(self._decide_hook(site)))

    def _decide_hook(self, site: ChannelSite):
        def hook(module: nn.Module, args: tuple) -> None:
            gate = self.gates[_key(site.name)]
            follows = self.router is not None and site.name != self.router
            if follows:
                logits, routed = self._routed_decision(site.name)
            else:
                logits = gate(args[0]) + (self.logit_shift + self.site_shifts.get(site.name, 0.0))  # [B, G]
            fixed = self.fixed_decisions.get(site.name)
            raw = None
            if self.force_open:
                decision = logits.new_ones(logits.shape[0], gate.groups)
            elif fixed is not None:
                decision = fixed.to(logits).expand(logits.shape[0], -1)
            else:
                if follows and routed is None:
                    raise RuntimeError(f"site {site.name} follows {self.router}, which made no decision this pass")
                density = self.densities.get(site.name, 1.0)
                raw = routed if follows else self.estimator.decide(logits, self.training, density)
                decision = self.estimator.expand(raw, gate.groups)  # [B, G]
            if site.name == self.router:  # a fixed router (the frozen-gate ablation) routes by its fixed width
                self._routed = (logits, raw if raw is not None else self._tiers_of(site.name, decision))
                self.estimator.on_route(self.routed_widths)
            per_group = gate.channels // gate.groups
            mask = repeat(decision, "b g -> b (g k)", k=per_group)  # [B, C]
            self.logits[site.name] = logits
            self.masks[site.name] = mask
            if self.training and raw is not None:
                counted = self.estimator.cost_mask(logits, raw)
                if counted is raw:  # the decisions themselves: their channel mask is already built
                    self.cost_masks[site.name] = mask
                else:
                    expanded = self.estimator.expand(counted, gate.groups)
                    self.cost_masks[site.name] = repeat(expanded, "b g -> b (g k)", k=per_group)
            else:  # no training graph may outlive its step (a deep copy of the model, for deploy, would fail)
                self.cost_masks.pop(site.name, None)
            boosted = mask if gate.scale is None else mask * repeat(gate.scale, "b g -> b (g k)", k=per_group)
            self._site_masks[site.name].mask = boosted  # what the channels are multiplied by

        return hook

    @property
    def routed_widths(self) -> torch.Tensor | None:
        """[B] index of the width choice the router chose per input in the last forward pass (network scope)."""
        return None if self._routed is None else self._routed[1].detach().sum(dim=1).long() - 1

    def _forget_route(self, module: nn.Module, args: tuple) -> None:
        self._routed = None
        self.estimator.on_route(None)

    def _tiers_of(self, site: str, decision: torch.Tensor) -> torch.Tensor:
        """[B, G] prefix decisions of ``site`` -> [B, tiers] open tiers (the ordinal form the followers expand)."""
        tiers = self.tiers(site).to(decision.device)
        count = int(tiers.max()) + 1
        widest = (decision * (tiers + 1)).amax(dim=1)  # the highest open tier + 1, per input
        return (torch.arange(count, device=decision.device)[None] < widest[:, None]).to(decision.dtype)

    def _routed_decision(self, site: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._routed is None:  # the router's producer must run before every other site's
            raise RuntimeError(
                f"site {site} ran before {self.router}, the site whose gate routes the network (width scope "
                "network needs the first channel site to be the first one the forward pass reaches)"
            )
        return self._routed

    def _activity_hook(self, site: ChannelSite) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not self.capture_activity:
                return
            groups = self.gate(site.name).groups
            act = output.detach().float().clamp(min=0)
            per_channel = act.mean(dim=tuple(range(2, act.dim()))) if act.dim() > 2 else act  # [B, C]
            self.activity[site.name] = per_channel.view(per_channel.shape[0], groups, -1).mean(dim=2)  # [B, G]

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity. The gates act through hooks on the model's layers; a model whose forward runs all its
        children in order (``nn.Sequential``) also runs this child, last, on its logits."""
        return x

    def detach_batch_state(self) -> None:
        """Drop the last training step's autograd history from the per-batch masks and logits (a deep copy of
        the model, e.g. for deploy, cannot copy tensors that are not graph leaves). Not between forward and
        backward: the step's gradients flow through these masks."""
        self.masks = {k: v.detach() for k, v in self.masks.items()}
        self.logits = {k: v.detach() for k, v in self.logits.items()}
        self._routed = None
        self.estimator.on_route(None)
        self.cost_masks = {}
        for site_mask in self._site_masks.values():
            site_mask.mask = site_mask.mask.detach()
        for gate in self.gates.values():
            gate.scale = None if gate.scale is None else gate.scale.detach()

    def gate(self, site: str) -> ChannelGate:
        return self.gates[_key(site)]

    def fixed_keep(self, site: str) -> int | None:
        """Channel groups every sample keeps at ``site`` when the estimator keeps a fixed count, else None."""
        return self.estimator.fixed_keep(self.gate(site).groups, self.densities.get(site, 1.0))

    def tiers(self, site: str) -> torch.Tensor | None:
        """Each channel group's tier at ``site`` for an ordinal (nested-width) estimator, else None."""
        return self.estimator.tiers(self.gate(site).groups)

    def fold_logit_shift(self) -> None:
        """Move ``logit_shift`` and ``site_shifts`` into the gates' output biases (the threshold stays at 0)."""
        with torch.no_grad():
            for site in self.sites:
                self.gate(site.name).fc2.bias.add_(self.logit_shift + self.site_shifts.get(site.name, 0.0))
        self.logit_shift = 0.0
        self.site_shifts = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for m in self._site_masks.values():
            m.remove()


def _key(site: str) -> str:
    return site.replace(".", "__")  # ModuleDict keys may not contain dots


def _group_size(width: int, group_size: int) -> int:
    """``--gate-groups`` is the number of channels decided together (1 = per channel)."""
    if group_size < 1 or width % group_size:
        raise ValueError(f"--gate-groups {group_size} must divide every site width (got a site of {width})")
    return group_size


def attach_gates(
    model: nn.Module,
    estimator: Estimator,
    group_size: int = 1,
    reduction: int = 4,
    bias_init: float = 2.0,
    boost: bool = False,
    rank: Criterion | None = None,
) -> GateSet:
    """Gates at every channel site of ``model`` (``rank``: the channel ranking an estimator orders sites by)."""
    gate_set = GateSet(model, model.channel_sites(), estimator, group_size, reduction, bias_init, boost, rank)
    model.gate_set = gate_set  # a submodule: its parameters train and save with the model
    return gate_set
