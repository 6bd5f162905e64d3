"""The dynamic-gating method: gates at every channel site, trained end-to-end under a MAC budget.

The method wires its parts to the training spine: the gates (``module.py``), when things happen
(``schedule.py``: the budget's slide from dense to the target, the guide's span), the loss terms
(``losses.py``: budget, balance and the terms that keep gates input-dependent), what an evaluation pass saw
(``eval_account.py``), the budget calibration after training (``fit_budget.py``), the deploy executors and the
dynamism measurements. How a logit becomes a decision (and what it anneals) is the estimator's business
(``gates/estimators/``); fixed-count estimators meet every site's density exactly and need neither the budget
term nor the calibration.
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
from ..distributed import current as current_distributed
from ..methods import Method, MethodSpec, ParamGroup
from ..plots import plot_class_open_rates
from ..prune.criteria import make_criterion
from .density import check_above_gated_floor, gated_floor, site_densities
from .deploy import to_deploy
from .dynamism import measure_dynamism
from .estimator import Estimator
from .estimators import ESTIMATORS, create_estimator
from .eval_account import EvalAccount
from .fit_budget import calibrate_global, calibrate_per_site
from .fixed_k import FixedKUnsupported, to_fixed_k
from .init import init_gates_like_l1_filter
from .losses import GateLosses
from .module import GateSet, attach_gates
from .options import GateOptions
from .sandwich import Sandwich
from .schedule import GateSchedule


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
        self.account = EvalAccount()  # what the gates did over the last evaluation pass
        self._collect: dict[str, list[torch.Tensor]] = {}
        self._class_rates: dict[str, torch.Tensor] = {}  # site -> [K, G] test open rates per class (inspect)

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
        self.schedule = GateSchedule(o, self.target, dict(self.densities))
        self.losses = GateLosses(self.schedule, self.estimator, self.cost, self.dense_macs, self.gate_set)
        phase = self.estimator.supernet_phase()
        self.sandwich = Sandwich(self.gate_set, phase.random, phase.gate_target) if phase else None
        if o.gate_init != "open":
            pool = 1.0 if o.gate_init == "l1" else o.gate_pool
            core = o.gate_core if o.gate_init == "core" else None
            init_gates_like_l1_filter(model, self.gate_set, self.densities, o.gate_bias_init, pool, core, rank)
        return model

    def param_groups(self) -> list[ParamGroup]:
        o = self.options
        if o.gate_lr_scale == 1.0 and o.gate_weight_decay:
            return []
        return [ParamGroup(list(self.gate_set.parameters()), o.gate_lr_scale, None if o.gate_weight_decay else 0.0)]

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        phase = self.estimator.supernet_phase()
        if phase is not None and phase.share > 0 and current_distributed().enabled:
            # held open, the gates get no gradient, and DDP (built without find_unused_parameters) needs every one
            raise ConfigError("--width-supernet is not supported under torchrun yet; train it in one process")
        self.schedule.begin(total_steps, steps_per_epoch, phase.share if phase else 0.0)

    # -- training
    def target_at(self, step: int) -> float:
        return self.schedule.target_at(step)

    def densities_at(self, step: int) -> dict[str, float]:
        return self.schedule.densities_at(step)

    def before_step(self, model: nn.Module, step: int) -> None:
        self.estimator.schedule(step / self.schedule.total_steps)
        self.gate_set.capture_activity = self.schedule.guided(step)
        if self.schedule.open_steps or self.schedule.supernet_steps:
            self.gate_set.force_open = self.schedule.held_open(step)
        if self.estimator.fixed_count:  # k shrinks with the schedule too
            self.gate_set.densities = self.densities_at(step)

    def extra_loss(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        step: int,
        epoch: int,
        inputs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        loss, logs = self.losses(step, epoch)
        if self.sandwich is None:
            return loss, logs
        extra = self.sandwich.terms(model, logits, self.schedule.in_supernet(step), inputs, labels)
        if extra is None:
            return loss, logs
        return (extra[0] if loss is None else loss + extra[0]), {**logs, **extra[1]}

    def finalize(self, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None) -> None:
        """Budget calibration on the validation split (``fit_budget``): the eval decisions moved onto the target,
        the shift folded into the gate biases. Fixed-count gates meet it by construction."""
        # The training-phase switches end with training, whatever their length (held open for the whole run,
        # the guide until the end): the calibration, the test pass and the saved model run the gates as trained.
        self.gate_set.force_open = False
        self.gate_set.capture_activity = False
        self.gate_set.activity = {}
        if self.estimator.fixed_count:  # a run ended inside its budget warm-up: the final k, as the checkpoint has
            self.gate_set.densities = dict(self.densities)
        if not self.calibrate or self.estimator.fixed_count:
            return
        calibrate = calibrate_per_site if self.options.per_site else calibrate_global
        self.calibration = calibrate(self, model, val_loader, amp_dtype)

    def collect_logits(self, sites: Iterable[str]) -> None:
        """Keep every logit of the next evaluation pass at ``sites`` (read with ``collected_logits``)."""
        self._collect = {site: [] for site in sites}

    def collected_logits(self) -> dict[str, torch.Tensor]:
        collected = {site: torch.cat(chunks) for site, chunks in self._collect.items()}
        self._collect = {}
        return collected

    # -- evaluation
    def deploy_model(self, model: nn.Module) -> nn.Module:
        """The deploy executor; fixed-count gates on a model with static shapes (topk on ResNets, MobileNetV2)
        also get the fixed-k executor as its ``fixedk`` strategy."""
        deploy = to_deploy(model)
        with contextlib.suppress(FixedKUnsupported):  # threshold gates, chains of sites: data-dependent only
            deploy.add_executor("fixedk", to_fixed_k(model), batch1_default=True)  # fastest at b1: BENCHMARKS
        return deploy

    def start_eval(self) -> None:
        self.account.start(s.name for s in self.gate_set.sites)

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor:
        for site, chunks in self._collect.items():  # per-site calibration collects the pass's logits
            chunks.append(self.gate_set.logits[site].detach().float().cpu())
        masks = self.gate_set.masks
        self.account.add(masks, batch_size)
        return self.cost.macs_from_masks({k: v.double() for k, v in masks.items()}).detach().cpu()

    def open_rates(self) -> dict[str, float]:
        """Per-site open rate over the last evaluation pass."""
        return self.account.open_rates()

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """The validation pass's open rate and conditional share per site (how dynamic the gates are, epoch by
        epoch: the diagnosis of a recipe whose gates freeze or collapse)."""
        shares = self.account.conditional_shares()
        return {
            **{f"open/{k}": v for k, v in self.open_rates().items()},
            **{f"conditional/{k}": v for k, v in shares.items()},
            **({"conditional_share": sum(shares.values()) / len(shares)} if shares else {}),
            **self.estimator.logs(),
        }

    def result_fields(self) -> dict[str, Any]:
        sets = self.account.sets_summary()
        return {
            "gate": self.name,
            "target_macs": self.target,
            **{f"{k}_final": v for k, v in self.estimator.logs().items()},
            "site_open_rates": self.open_rates(),
            "site_channel_sets": sets,  # of the test pass: one set everywhere is static pruning
            "dynamic_sites": sum(v["distinct"] > 1 for v in sets.values()),
            "gate_density": self.options.gate_density,
            "site_densities": dict(self.densities),
            "gate_macs": self.cost.dense_macs - self.dense_macs,
            "sites_not_gated": dict(self.gate_set.skipped),
            "budget_calibration": self.calibration,
        }

    def inspect(
        self, model: nn.Module, val_loader: Any, test_loader: Any, num_classes: int, amp_dtype: torch.dtype | None
    ) -> dict[str, Any]:
        """How much the gates' input-dependence is worth (``dynamism.py``): conditional share, class spread and
        the frozen-gate ablation; keeps the class x channel open rates for ``figures``."""
        self._class_rates = {}
        if not self.options.measure_dynamism:
            return {}

        def macs_ratio(masks: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.cost.macs_from_masks({k: v.double() for k, v in masks.items()}).cpu() / self.dense_macs

        fields, self._class_rates = measure_dynamism(
            model, self.gate_set, val_loader, test_loader, num_classes, macs_ratio, amp_dtype
        )
        return fields

    def figures(self, out_dir: Path, title: str) -> dict[str, Path]:
        """The class x channel open-rate map of every site (test split), when ``inspect`` measured it."""
        if not self._class_rates:
            return {}
        path = out_dir / "gate_classes.png"
        plot_class_open_rates(self._class_rates, path, title)
        return {"gate_classes": path}

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
