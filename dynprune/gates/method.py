"""The dynamic-gating method: gates at every channel site, trained end-to-end under a MAC budget.

The method wires its parts to the training spine: the gates (``module.py``), the training part
(``training.py``: the budget's schedule, the loss terms, the switches before each step), the evaluation part
(``observe.py``: what a pass saw, per-sample MACs, what the gates' input-dependence is worth), the budget
calibration after training (``fit_budget.py``), the deploy executors and the rebuild. How a logit becomes a
decision (and what it anneals) is the estimator's business (``gates/estimators/``); fixed-count estimators meet
every site's density exactly and need neither the budget term nor the calibration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base import ConfigError, check_target_macs
from ..checkpoints import load_weights
from ..config import TrainConfig
from ..cost import CostModel
from ..methods import Method, MethodSpec, ParamGroup
from ..prune.criteria import make_criterion
from .density import check_above_gated_floor, gated_floor, site_densities
from .deploy import to_deploy
from .estimator import Estimator
from .estimators import ESTIMATORS, create_estimator
from .eval_account import EvalAccount
from .fit_budget import calibrate_global, calibrate_per_site
from .fixed_k import FixedKUnsupported, to_fixed_k
from .init import init_gates_like_l1_filter
from .module import GateSet, attach_gates
from .observe import GateObserver
from .options import GateOptions
from .routed import RoutedUnsupported, Router
from .sandwich import Sandwich
from .schedule import GateSchedule
from .training import GateTraining


class GatedMethod(Method):
    calibration_tolerance = 0.005

    def __init__(
        self,
        gate: str,
        target_macs: float,
        options: GateOptions | None = None,
        estimator: Estimator | None = None,
        calibrate: bool | None = None,
    ) -> None:
        if gate not in ESTIMATORS:
            raise ConfigError(f"--gate got {gate!r}; known: none, {', '.join(ESTIMATORS.names())}")
        self.name = gate
        self.options = options or GateOptions()
        self.estimator = estimator or create_estimator(gate)
        self.estimator.check_gate_options(self.options)
        self.target = check_target_macs(target_macs)
        self.calibrate = self.options.calibrate_budget if calibrate is None else calibrate
        self.calibration: dict[str, Any] = {}
        self.densities: dict[str, float] = {}  # per-site final densities (the reference for global)

    @classmethod
    def from_config(cls, cfg: TrainConfig, gate: str) -> GatedMethod:
        estimator = create_estimator(gate, cfg.options.get(gate))
        return cls(gate, cfg.target_macs, cfg.options["gated"], estimator)

    # -- setup
    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
        self.dense_macs = CostModel.from_model(model, input_shape).dense_macs  # the reference of every ratio
        o = self.options
        rank = make_criterion(o.gate_criterion)  # the ranking gates start from and widths are ordered by
        try:
            self.gate_set: GateSet = attach_gates(
                model, self.estimator, o.gate_groups, o.gate_reduction, o.gate_bias_init, o.gate_boost, rank
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if o.gate_boost and self.gate_set.unboosted:  # the scale must act at the producer (deploy applies it there)
            print(
                f"gates: {len(self.gate_set.unboosted)} sites not boosted (their channels pass a channel-wise layer, "
                "e.g. a depthwise conv, after the producer)",
                flush=True,
            )
        self.cost = CostModel.from_model(model, input_shape)  # gate layers counted as always-on layers
        for site, reason in self.gate_set.skipped.items():
            print(f"gates: site {site} not gated: {reason}", flush=True)
        floor = gated_floor(self.cost, (s.name for s in self.gate_set.sites), self.dense_macs)
        check_above_gated_floor(self.target, floor, "--target-macs")
        groups = {s.name: self.gate_set.gate(s.name).groups for s in self.gate_set.sites}
        self.densities = site_densities(o.gate_density, self.cost, self.target, self.dense_macs, groups)
        self.gate_set.densities = dict(self.densities)
        self.estimator.check_densities(self.densities)
        if self.gate_set.router is not None:  # its deploy model is the routed executor: refused now, not at deploy
            try:
                Router(model)
            except RoutedUnsupported as exc:
                raise ConfigError(f"--width-scope network: {exc}") from None
        self.training = GateTraining(
            o, self.estimator, self.gate_set, self.cost, self.dense_macs, self.target, self.densities
        )
        self.observer = GateObserver(self.gate_set, self.cost, self.dense_macs)
        if o.gate_init != "open":
            pool = 1.0 if o.gate_init == "l1" else o.gate_pool
            core = o.gate_core if o.gate_init == "core" else None
            pool_min = 0.0 if o.gate_init == "l1" else o.gate_pool_min
            init_gates_like_l1_filter(
                model, self.gate_set, self.densities, o.gate_bias_init, pool, core, rank, pool_min
            )
        return model

    # the parts' state, as the calibration, the API and tests read it
    @property
    def schedule(self) -> GateSchedule:
        return self.training.schedule

    @property
    def sandwich(self) -> Sandwich | None:
        return self.training.sandwich

    @property
    def account(self) -> EvalAccount:
        return self.observer.account

    # -- training (``training.py``)
    def param_groups(self) -> list[ParamGroup]:
        return self.training.param_groups()

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        self.training.begin(total_steps, steps_per_epoch)

    def target_at(self, step: int) -> float:
        return self.schedule.target_at(step)

    def densities_at(self, step: int) -> dict[str, float]:
        return self.schedule.densities_at(step)

    def before_step(self, model: nn.Module, step: int) -> None:
        self.training.before_step(step)

    def extra_loss(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        step: int,
        epoch: int,
        inputs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        return self.training.loss(model, logits, step, epoch, inputs, labels)

    def finalize(self, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None) -> None:
        """Budget calibration on the validation split (``fit_budget``): the eval decisions moved onto the target,
        the shift folded into the gate biases. Fixed-count gates meet it by construction."""
        self.training.end()
        if not self.calibrate or self.estimator.fixed_count:
            return
        calibrate = calibrate_per_site if self.options.per_site else calibrate_global
        self.calibration = calibrate(self, model, val_loader, amp_dtype)

    # -- evaluation (``observe.py``)
    def collect_logits(self, sites: Iterable[str]) -> None:
        self.observer.collect_logits(sites)

    def collected_logits(self) -> dict[str, torch.Tensor]:
        return self.observer.collected_logits()

    def deploy_model(self, model: nn.Module) -> nn.Module:
        """The deploy executor; fixed-count gates on a model with static shapes (topk on ResNets, MobileNetV2)
        also get the fixed-k executor as its ``fixedk`` strategy, network-scope width gates the ``routed`` one
        (their default at every batch size)."""
        deploy = to_deploy(model)  # network-scope widths: the routed executor, only (``routed_deploy``)
        with contextlib.suppress(FixedKUnsupported):  # threshold gates, chains of sites: data-dependent only
            deploy.add_executor("fixedk", to_fixed_k(model), batch1_default=True)  # fastest at b1: BENCHMARKS
        return deploy

    def start_eval(self) -> None:
        self.observer.start_eval()

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor:
        return self.observer.per_sample_macs(batch_size)

    def open_rates(self) -> dict[str, float]:
        """Per-site open rate over the last evaluation pass."""
        return self.observer.open_rates()

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        return {**self.observer.epoch_logs(), **self.estimator.logs()}

    def result_fields(self) -> dict[str, Any]:
        return {
            "gate": self.name,
            "target_macs": self.target,
            **{f"{k}_final": v for k, v in self.estimator.logs().items()},
            **self.observer.result_fields(),
            "gate_density": self.options.gate_density,
            "site_densities": dict(self.densities),
            "budget_calibration": self.calibration,
        }

    def inspect(
        self, model: nn.Module, val_loader: Any, test_loader: Any, num_classes: int, amp_dtype: torch.dtype | None
    ) -> dict[str, Any]:
        """How much the gates' input-dependence is worth (``dynamism.py``), unless turned off."""
        if not self.options.measure_dynamism:
            return {}
        return self.observer.inspect(model, val_loader, test_loader, num_classes, amp_dtype)

    def figures(self, out_dir: Path, title: str) -> dict[str, Path]:
        return self.observer.figures(out_dir, title)

    def rebuild(self, model: nn.Module, ckpt: dict[str, Any], input_shape: Sequence[int], source: str) -> nn.Module:
        """Gates rebuilt from the saved config; their calibration is already folded into the saved biases."""
        self.calibrate = False
        self.prepare(model, input_shape)
        load_weights(model, ckpt["model"], source)
        return model.eval()


def _option_groups() -> dict[str, type]:
    return {"gated": GateOptions, **{name: est.Options for name, est in ESTIMATORS.items()}}


GATED = MethodSpec(
    "gated", "gate", ESTIMATORS.names, _option_groups, GatedMethod.from_config, lambda name: ESTIMATORS[name].recipe
)
