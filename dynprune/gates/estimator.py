"""The gate-estimator interface: how a real-valued logit becomes a 0/1 channel decision gradients pass through.

An estimator is one file in ``gates/estimators/`` that defines ``ESTIMATOR``, a subclass of ``Estimator`` with
its own options (a dataclass whose fields become its command-line flags) and, where it anneals something over
the run, a ``schedule``. Adding one touches that file and its test, nothing else.

Every estimator is deterministic in eval mode (no noise at test time: leaving it on is a known bug of
ConvNet-AIG that we avoid by construction). Straight-through outputs are written ``hard + (soft -
soft.detach())``: the added term is exactly zero in the forward pass, so forward values are exactly 0 or 1
while the gradient is that of ``soft``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch


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

    def fixed_keep(self, groups: int, density: float) -> int | None:
        """Groups every sample keeps at a site of ``groups`` at ``density`` (fixed-count estimators), else None."""
        return None

    def logs(self) -> dict[str, float]:
        """Scalars worth logging per step and saving in result.json (e.g. the current temperature)."""
        return {}


#: The threshold gates' recipe (BENCHMARKS.md, "Gate recipes" and "Gates against static pruning"; 2-epoch
#: fine-tunes from dense at 0.1 of its MACs): start on exactly the channels l1-filter keeps, hold every site to
#: its density, a light budget weight and no target slide (they start at their density). A global budget or an
#: open start lost 20-50 points there. Gumbel's noise fades over the second half so training ends on the
#: deterministic decisions the model is tested with.
HELD_PER_SITE: Mapping[str, Any] = MappingProxyType(
    {"gate_init": "l1", "gate_density": "uniform", "budget_weight": 20.0, "budget_warmup_epochs": 0.0}
)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return hard + (soft - soft.detach())


def eval_decision(logits: torch.Tensor) -> torch.Tensor:
    return (logits >= 0).to(logits.dtype)


def logistic_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Difference of two Gumbels = logistic noise log(u) - log(1 - u), clamped away from u in {0, 1}."""
    u = torch.rand(shape, device=like.device, dtype=like.dtype).clamp_(1e-6, 1 - 1e-6)
    return torch.log(u) - torch.log1p(-u)
