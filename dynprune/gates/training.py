"""The gated method's training part: when things happen (``schedule.py``), the loss terms in force at a step
(``losses.py``, and the supernet's sandwich passes, ``sandwich.py``), the switches set before each step and the
gates' own parameter group. ``GatedMethod`` builds one in ``prepare`` and hands the training hooks to it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..base import ConfigError
from ..cost import CostModel
from ..distributed import current as current_distributed
from ..methods import ParamGroup
from .estimator import Estimator
from .losses import GateLosses
from .module import GateSet
from .options import GateOptions
from .sandwich import Sandwich
from .schedule import GateSchedule


class GateTraining:
    def __init__(
        self,
        options: GateOptions,
        estimator: Estimator,
        gate_set: GateSet,
        cost: CostModel,
        dense_macs: float,
        target: float,
        densities: Mapping[str, float],
    ) -> None:
        self.options, self.estimator, self.gate_set = options, estimator, gate_set
        self.final_densities = dict(densities)
        self.schedule = GateSchedule(options, target, dict(densities))
        self.losses = GateLosses(self.schedule, estimator, cost, dense_macs, gate_set)
        self.phase = estimator.supernet_phase()
        self.sandwich = (
            Sandwich(gate_set, ph.random, ph.gate_target, ph.label, ph.narrowest) if (ph := self.phase) else None
        )

    def param_groups(self) -> list[ParamGroup]:
        """The gates' own group where their learning rate or weight decay differs from the backbone's."""
        o = self.options
        if o.gate_lr_scale == 1.0 and o.gate_weight_decay:
            return []
        return [ParamGroup(list(self.gate_set.parameters()), o.gate_lr_scale, None if o.gate_weight_decay else 0.0)]

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        supernet_share = self.phase.share if self.phase else 0.0
        if current_distributed().enabled:
            # gates that get no gradient (held open; or not run: the followers of a network-scope router) break
            # DDP, built without find_unused_parameters, which needs every parameter used
            if supernet_share > 0:
                raise ConfigError("--width-supernet is not supported under torchrun yet; train it in one process")
            if self.phase and self.phase.narrowest > 0:  # a second forward with gradients, outside DDP's wrapper
                raise ConfigError("--width-narrowest-weight is not supported under torchrun yet; train in one process")
            if self.estimator.shares_decision():
                raise ConfigError("--width-scope network is not supported under torchrun yet; train it in one process")
        self.schedule.begin(total_steps, steps_per_epoch, supernet_share)

    def before_step(self, step: int) -> None:
        self.estimator.schedule(step / self.schedule.total_steps)
        self.gate_set.capture_activity = self.schedule.guided(step)
        if self.schedule.open_steps or self.schedule.supernet_steps:
            self.gate_set.force_open = self.schedule.held_open(step)
        if self.estimator.fixed_count:  # k shrinks with the schedule too
            self.gate_set.densities = self.schedule.densities_at(step)

    def loss(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        step: int,
        epoch: int,
        inputs: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The gate terms in force at ``step`` (None: none is), the sandwich's passes included, and their logs."""
        loss, logs = self.losses(step, epoch)
        if self.sandwich is None:
            return loss, logs
        supernet, densities = self.schedule.in_supernet(step), self.schedule.densities_at(step)
        extra = self.sandwich.terms(model, logits, supernet, inputs, labels, densities)
        if extra is None:
            return loss, logs
        return (extra[0] if loss is None else loss + extra[0]), {**logs, **extra[1]}

    def end(self) -> None:
        """The training-phase switches end with training, whatever their length (held open for the whole run,
        the guide until the end): calibration, the test pass and the saved model run the gates as trained."""
        self.gate_set.force_open = False
        self.gate_set.capture_activity = False
        self.gate_set.activity = {}
        if self.estimator.fixed_count:  # a run ended inside its budget warm-up: the final k, as the checkpoint has
            self.gate_set.densities = dict(self.final_densities)
