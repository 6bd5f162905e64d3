"""The gate-estimator interface: how a real-valued logit becomes a 0/1 channel decision gradients pass through.

An estimator is one file in ``gates/estimators/`` that defines ``ESTIMATOR``, a subclass of ``Estimator`` with
its own options (a dataclass whose fields become its command-line flags) and, where it anneals something over
the run, a ``schedule``. Adding one touches that file, nothing else: the tests parametrized over ``ESTIMATORS``
(tests/test_gates.py) and the comparison pick it up.

Every estimator is deterministic in eval mode (no noise at test time: leaving it on is a known bug of
ConvNet-AIG that we avoid by construction). Straight-through outputs are written ``hard + (soft -
soft.detach())``: the added term is exactly zero in the forward pass, so forward values are exactly 0 or 1
while the gradient is that of ``soft``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from ..prune.criteria import Criterion


@dataclasses.dataclass(frozen=True)
class SupernetPhase:
    """The first ``share`` of the run trains the nested widths as one supernet (every gate held open, the
    sandwich rule: ``gates/sandwich.py``) before the gates decide; ``random`` random widths per step; after it,
    ``gate_target`` weighs the online gate target (0: off), ``label`` says which, ``narrowest`` the narrowest
    width's distillation on every input once the gates decide (``sandwich.py``)."""

    share: float
    random: int
    gate_target: float = 0.0
    label: str = "correct"
    narrowest: float = 0.0


@dataclasses.dataclass
class NoOptions:
    """An estimator without options of its own."""


class Estimator:
    """Logits [B, G] -> decisions [B, G] in [0, 1] (exactly 0/1 where the estimator is hard)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: decided at inference: a one-line description for the README table and ``--help``
    summary: ClassVar[str] = ""
    #: every sample keeps exactly its site's k = density x groups channels (fixed shapes; the budget is met exactly)
    fixed_count: ClassVar[bool] = False
    #: option values this estimator measured best with: the defaults of ``--gate NAME`` (flags and presets
    #: override them) and of its comparison cells
    recipe: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    #: other starts worth comparing, by name: (option values on top of the recipe, what they are); the comparison
    #: registers each as ``<estimator>-<name>``
    variants: ClassVar[Mapping[str, tuple[Mapping[str, Any], str]]] = MappingProxyType({})

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def schedule(self, progress: float) -> None:
        """Called before every training step with the run's progress in [0, 1] (to anneal a temperature)."""

    def decide(self, logits: torch.Tensor, training: bool, density: float) -> torch.Tensor:
        """Decisions for one site; ``density`` is the site's target open fraction (used by fixed-count gates)."""
        raise NotImplementedError

    def cost_mask(self, logits: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        """What the budget loss counts as open during training (default: the decisions themselves; an estimator
        with a closed-form expectation, e.g. an expected L0 norm, returns that instead)."""
        return decisions

    def logit_count(self, groups: int) -> int:
        """Logits a site's gate outputs for a site of ``groups`` channel groups (default: one per group)."""
        return groups

    def expand(self, decisions: torch.Tensor, groups: int) -> torch.Tensor:
        """[B, logit_count] decisions (or cost masks) -> [B, groups] (default: already one per group)."""
        return decisions

    def tiers(self, groups: int) -> torch.Tensor | None:
        """Ordinal estimators (nested widths): each group's tier [groups], where a sample opens tiers 0..t iff its
        logits 1..t are all >= 0 (deploy decides so); None for one independent decision per group."""
        return None

    def prepare_sites(self, model: torch.nn.Module, sites: Sequence[Any], rank: Criterion) -> None:
        """Before the gates attach to the sites (e.g. order each site's channels by ``rank``, the run's
        ``--gate-criterion``)."""

    def check_gate_options(self, options: Any) -> None:
        """Raise ConfigError for shared gate options (``GateOptions``) this estimator cannot honour."""

    def check_densities(self, densities: Mapping[str, float]) -> None:
        """Raise ConfigError where the sites' target densities leave this estimator no choice per input."""

    def supernet_phase(self) -> SupernetPhase | None:
        """Ordinal estimators: a supernet phase before the gates decide, and their gate target after (None:
        neither)."""
        return None

    def shares_decision(self) -> bool:
        """True when one decision per input serves every site: the first site's gate routes the whole network
        (nested widths at network scope), and the other sites' gates are not run."""
        return False

    def on_route(self, widths: torch.Tensor | None) -> None:
        """A network-scope router decided: ``widths`` [B] the width choice per input of the current forward pass
        (None: a new pass starts, nothing decided yet)."""

    def fixed_keep(self, groups: int, density: float) -> int | None:
        """Groups every sample keeps at a site of ``groups`` at ``density`` (fixed-count estimators), else None."""
        return None

    def logs(self) -> dict[str, float]:
        """Scalars worth logging per step and saving in result.json (e.g. the current temperature)."""
        return {}


#: How gates start so that they decide per input (BENCHMARKS.md, "Gates that decide per input"; 3-epoch fine-tunes
#: from dense at 0.1 and 0.25 of its MACs): a candidate pool of 1.5 x k channels from the l1 ranking with equal
#: biases, the activation guide (each input's final k most active channels as the gates' targets, the gates held
#: open for the first quarter epoch and guided over the first half of the run) and feature boosting. topk gates so
#: started were level with l1-filter at 0.1 and 0.35 below it at 0.25; targets that follow the sliding budget
#: instead were 0.4 better at 0.25 but 3.3 worse at 0.1 (one seed collapsed).
DYNAMIC_START: Mapping[str, Any] = MappingProxyType(
    {
        "gate_init": "pool",
        "gate_pool": 1.5,
        "guide_weight": 1.0,
        "guide_open_epochs": 0.25,
        "guide_final_k": True,
        "gate_boost": True,
    }
)

#: The start that makes gates static (the recipe before 2026-12-06): open on exactly the channels l1-filter keeps;
#: in a short fine-tune every input then opens the same set ("Are the gates dynamic?"): l1-filter through gates.
STATIC_START: Mapping[str, Any] = MappingProxyType(
    {"gate_init": "l1", "guide_weight": 0.0, "guide_open_epochs": 0.0, "gate_boost": False}
)
STATIC_VARIANT: Mapping[str, tuple[Mapping[str, Any], str]] = MappingProxyType(
    {"l1": (STATIC_START, "started on exactly l1-filter's channels (static: one channel set per site)")}
)

#: The threshold gates' density control (BENCHMARKS.md, "Gate recipes" and "Gates against static pruning"): every
#: site held to its density, a light budget weight and no target slide; a global budget lost 20-50 points at 0.1
#: of the dense MACs in 2-epoch fine-tunes.
HELD_PER_SITE: Mapping[str, Any] = MappingProxyType(
    {**DYNAMIC_START, "gate_density": "uniform", "budget_weight": 20.0, "budget_warmup_epochs": 0.0}
)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return hard + (soft - soft.detach())


def eval_decision(logits: torch.Tensor) -> torch.Tensor:
    return (logits >= 0).to(logits.dtype)


def logistic_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Difference of two Gumbels = logistic noise log(u) - log(1 - u), clamped away from u in {0, 1}."""
    u = torch.rand(shape, device=like.device, dtype=like.dtype).clamp_(1e-6, 1 - 1e-6)
    return torch.log(u) - torch.log1p(-u)
