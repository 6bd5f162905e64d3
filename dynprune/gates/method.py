"""The dynamic-gating method: gates at every channel site, trained end-to-end under a MAC budget.

Loss = task loss + budget_weight * (mean_b MACs_b / MACs_dense - target)^2 + balance_weight * balance, where
MACs_b is counted per sample from the gate decisions (gate MACs included) by the shared cost model, and the
balance term pushes every site's open rate back inside [balance_low, balance_high] so no site collapses to
all-off or stays all-on. During the first ``budget_warmup_epochs`` the target slides linearly from 1 to its
final value, so a dense initialisation is not shocked. How a logit becomes a decision (and what it anneals) is
the estimator's business (``gates/estimators/``); fixed-count estimators meet every site's density exactly and
need neither the budget term nor the calibration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import ConfigError, check_target_macs
from ..checkpoints import load_weights
from ..config import TrainConfig
from ..cost import CostModel
from ..distributed import global_mean
from ..methods import Method, MethodSpec, ParamGroup
from ..plots import plot_class_open_rates
from .beta import BetaPrior
from .density import bounds, site_densities, slide
from .deploy import to_deploy
from .dynamism import measure_dynamism
from .estimator import Estimator
from .estimators import ESTIMATORS, create_estimator
from .eval_account import EvalAccount
from .fit_budget import calibrate_global, calibrate_per_site
from .fixed_k import FixedKUnsupported, to_fixed_k
from .guide import batch_shaping_loss, gate_rate_loss, guide_loss
from .init import init_gates_like_l1_filter
from .module import GateSet, attach_gates
from .options import GateOptions


class GatedMethod(Method):
    balance_low, balance_high = 0.05, 0.95
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
        self.target = check_target_macs(target_macs)
        self.calibrate = self.options.calibrate_budget if calibrate is None else calibrate
        self.calibration: dict[str, Any] = {}
        self.densities: dict[str, float] = {}  # per-site final densities (the reference for global)
        self.epoch = 0
        self.total_steps, self.warmup_steps, self.open_steps = 1, 0, 0
        self.account = EvalAccount()  # what the gates did over the last evaluation pass
        self._collect: dict[str, list[torch.Tensor]] = {}
        self._shape_prior: BetaPrior | None = None  # batch-shaping's prior, built on first use
        self._class_rates: dict[str, torch.Tensor] = {}  # site -> [K, G] test open rates per class (inspect)

    @classmethod
    def from_config(cls, cfg: TrainConfig, gate: str) -> GatedMethod:
        estimator = create_estimator(gate, cfg.options.get(gate))
        return cls(gate, cfg.target_macs, cfg.options["gated"], estimator)

    # -- setup
    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
        self.dense_macs = CostModel.from_model(model, input_shape).dense_macs  # the reference of every ratio
        o = self.options
        try:
            self.gate_set: GateSet = attach_gates(
                model, self.estimator, o.gate_groups, o.gate_reduction, o.gate_bias_init, o.gate_boost
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
        floor = self.cost.macs({s.name: 0.0 for s in self.gate_set.sites}) / self.dense_macs
        if self.target <= floor + 0.01:
            raise ConfigError(
                f"--target-macs {self.target} is below what gates can reach: with every gate closed the "
                f"model still costs {floor:.3f} of dense (gates and layers outside channel sites); "
                f"choose > {floor + 0.01:.2f}"
            )
        groups = {s.name: self.gate_set.gate(s.name).groups for s in self.gate_set.sites}
        self.densities = site_densities(o.gate_density, self.cost, self.target, self.dense_macs, groups)
        self.gate_set.densities = dict(self.densities)
        if o.gate_init != "open":
            pool = 1.0 if o.gate_init == "l1" else o.gate_pool
            core = o.gate_core if o.gate_init == "core" else None
            init_gates_like_l1_filter(model, self.gate_set, self.densities, o.gate_bias_init, pool, core)
        return model

    def param_groups(self) -> list[ParamGroup]:
        o = self.options
        if o.gate_lr_scale == 1.0 and o.gate_weight_decay:
            return []
        return [ParamGroup(list(self.gate_set.parameters()), o.gate_lr_scale, None if o.gate_weight_decay else 0.0)]

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = int(self.options.budget_warmup_epochs * steps_per_epoch)
        guided = self.options.guide_weight > 0  # held open, the gates learn from the guide alone: never without it
        self.open_steps = int(self.options.guide_open_epochs * steps_per_epoch) if guided else 0

    # -- training
    def _slide(self, step: int) -> float:
        return slide(step, self.warmup_steps, self.options.budget_schedule)

    def target_at(self, step: int) -> float:
        return 1.0 - (1.0 - self.target) * self._slide(step)

    def densities_at(self, step: int) -> dict[str, float]:
        moved = self._slide(step)
        return {k: 1.0 - (1.0 - d) * moved for k, d in self.densities.items()}

    def _guided(self, step: int) -> bool:
        """The guide is on for the first ``guide_until`` of the run, and always while the gates are held open."""
        until = max(self.options.guide_until * self.total_steps, self.open_steps)
        return self.options.guide_weight > 0 and step < until

    def before_step(self, model: nn.Module, step: int) -> None:
        self.estimator.schedule(step / self.total_steps)
        self.gate_set.capture_activity = self._guided(step)
        if self.open_steps:
            self.gate_set.force_open = step < self.open_steps
        if self.estimator.fixed_count:  # k shrinks with the schedule too
            self.gate_set.densities = self.densities_at(step)

    def extra_loss(
        self, model: nn.Module, logits: torch.Tensor, step: int, epoch: int
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        guide = None
        if self._guided(step):
            densities = self.densities if self.options.guide_final_k else self.densities_at(step)
            guide = self.options.guide_weight * guide_loss(self.gate_set.logits, self.gate_set.activity, densities)
        if step < self.open_steps:  # held open at the start: the activation guide is the gates' only signal
            return guide, ({"guide_loss": guide.item()} if guide is not None else {})
        budget, logs = self._budget_loss(step)
        terms = {"guide_loss": guide, "rate_loss": self._rate_loss(step), "shape_loss": self._shape_loss(step)}
        logs.update({name: term.item() for name, term in terms.items() if term is not None})
        present = [t for t in (budget, *terms.values()) if t is not None]
        return (sum(present) if present else None), logs

    def _rate_loss(self, step: int) -> torch.Tensor | None:
        if self.options.gate_rate_weight <= 0:
            return None
        # each gate's open rate over the global batch under torchrun, as the budget term's (a square of the mean)
        rates = {site: global_mean(m.float()) for site, m in self.gate_set.cost_masks.items()}  # [C] each
        return self.options.gate_rate_weight * gate_rate_loss(rates, self.densities_at(step))

    def _shape_loss(self, step: int) -> torch.Tensor | None:
        """Batch-shaping at a weight decaying linearly to 0 at ``gate_shape_until`` of the run (on this rank's
        batch under torchrun)."""
        o = self.options
        fade = 1.0 - step / (o.gate_shape_until * self.total_steps)
        if o.gate_shape_weight <= 0 or fade <= 0:
            return None
        if self._shape_prior is None:  # Beta(d, 1 - d) per gate, d = its site's final density
            d = torch.cat([torch.full((g.groups,), self.densities[s]) for s, g in self._site_gates()])
            self._shape_prior = BetaPrior(d, 1.0 - d)
        sites = [s for s, _ in self._site_gates()]
        return o.gate_shape_weight * fade * batch_shaping_loss(self.gate_set.logits, self._shape_prior, sites)

    def _site_gates(self) -> list[tuple[str, Any]]:
        """(site, its gate) in the order the gate set fills its per-site logits."""
        return [(s.name, self.gate_set.gate(s.name)) for s in self.gate_set.sites]

    def _budget_loss(self, step: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        masks = self.gate_set.cost_masks
        ratio = self.cost.macs_from_masks(masks) / self.dense_macs  # [B], differentiable through the estimator
        target = self.target_at(step)
        logs = {"macs_ratio": ratio.mean().item(), "budget_target": target, **self.estimator.logs()}
        if self.estimator.fixed_count:  # every sample already costs exactly its sites' densities
            return None, logs
        # Means over the global batch under torchrun: the budget is a square of the mean, not a mean of squares.
        rates = global_mean(torch.stack([m.mean(dim=1) for m in masks.values()], dim=1))  # [S] open rate per site
        if self.options.per_site:  # every site held to its own density
            now = self.densities_at(step)
            wanted = torch.tensor([now[name] for name in masks], dtype=rates.dtype, device=rates.device)
            budget = ((rates - wanted) ** 2).mean()
        else:
            budget = (global_mean(ratio) - target) ** 2
        low, high = self._bounds(rates, list(masks))
        balance = (F.relu(low - rates) ** 2 + F.relu(rates - high) ** 2).mean()
        return self.options.budget_weight * budget + self.options.balance_weight * balance, logs

    def _bounds(self, rates: torch.Tensor, sites: list[str]) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Per-site open-rate bounds: [0.05, 0.95], tightened towards each site's density with DGNet's decay."""
        if self.options.density_bound_decay <= 0:
            return self.balance_low, self.balance_high
        pairs = [bounds(self.densities[s], self.epoch, self.options.density_bound_decay) for s in sites]
        low, high = (torch.tensor(v, dtype=rates.dtype, device=rates.device) for v in zip(*pairs, strict=True))
        return low, high

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
        self.epoch = epoch
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
