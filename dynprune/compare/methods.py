"""What each compared method is (a registry of objects that carry their own behaviour): the overrides of a cell's
TrainConfig, how a MAC target is checked, what a cell costs, what runs before its training, what its run is (a
training run; a cascade: its members' runs and the calibration), what model its latency is timed on, what its
report row shows. A new comparison method is one class (or one instance; base: ``method_base.CompareMethod``)
registered here; nothing else switches on it.

Every method that starts from the dense model gets the same fine-tune budget (``epochs``, ``lr``); models
trained from scratch (the dense model, and the compact architectures that answer "why not just train a smaller
network?") get ``dense_epochs`` and ``dense_lr``. ``rl`` first searches a policy (``python -m agents.search``,
run as a subprocess: dynprune never imports ``agents``) and then fine-tunes it like ``l1-filter``.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..base import ConfigError
from ..cost import CostModel
from ..gates.density import check_above_gated_floor, gated_floor
from ..gates.estimators import ESTIMATORS
from ..orphans import die_with_parent
from ..prune.pruners import PRUNERS
from ..prune.ratios import keep_fractions, solve_uniform_for_macs
from ..registry import Registry
from .cascade_method import CascadeMethod, ShallowCascadeMethod
from .cell import Cell
from .config import CompareConfig
from .method_base import CompareMethod
from .width_for_macs import width_for_macs


class DenseMethod(CompareMethod):
    family = "dense"
    uses_target, from_dense, is_reference = False, False, True

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        return {"epochs": cfg.dense_epochs, "lr": cfg.dense_lr}


class StaticMethod(CompareMethod):
    """A static pruner; structured ones remove their channels physically (``--hard``)."""

    def __init__(
        self,
        name: str,
        description: str,
        structured: bool,
        pruner: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, description)
        self.structured = structured
        self.pruner = pruner or name  # a variant (another name) may run a registered pruner with other options
        self.options = dict(options or {})

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        hard = {"hard": True} if self.structured else {}
        return {"prune": self.pruner, "target_macs": target, **hard, **self.options}

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        if self.structured:
            try:
                solve_uniform_for_macs(cost, target)  # raises ConfigError naming the reachable floor
            except ConfigError as exc:  # the comparison's setting is ``targets``, not the train CLI's flag
                raise ConfigError(f"{self.name}: " + str(exc).replace("--target-macs", "target")) from None


class GatedCompare(CompareMethod):
    """Gates of one estimator with its recipe (TrainConfig values on top of the short-fine-tune defaults)."""

    family = "dynamic"
    per_sample_cost = True
    cost_factor = 1.2  # the gates' small networks and budget terms
    extra_val_passes = 18.0  # + the budget calibration (~12 validation passes) and the dynamism passes (3)

    def __init__(
        self, name: str, description: str, gate: str | None = None, recipe: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(name, description)
        self.gate = gate or name
        self.recipe = recipe  # None: the estimator's own recipe, as for --gate NAME

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        # What a cell runs: its estimator's recipe (``--gate NAME``'s defaults: gates/estimator.py), on top of a
        # target sliding in over the first quarter of the fine-tune where the recipe sets no slide of its own (the
        # threshold estimators' recipes hold every site to its density from the first step; topk's k slides).
        # --gate-budget-weight, when given, overrides every recipe's budget weight (topk has no budget term).
        values = {
            "gate": self.gate,
            "target_macs": target,
            "budget_warmup_epochs": cfg.epochs / 4,
            **(ESTIMATORS[self.gate].recipe if self.recipe is None else self.recipe),
        }
        if cfg.gate_budget_weight is not None:
            values["budget_weight"] = cfg.gate_budget_weight
        return values

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        floor = gated_floor(cost, cost.site_widths, cost.dense_macs)
        check_above_gated_floor(target, floor, f"{self.name}: target")


class WidthCompare(GatedCompare):
    """Width gates as measured best (BENCHMARKS, "Width gates: a label at the budget"): one width per input for the
    whole network (a router over static models), one BatchNorm per width, a gate target at the budget (the
    ranked label) with the narrowest width learning every input, and width choices that straddle the uniform
    density meeting the target (half and twice it, at most halfway to 1, in sixteenths): a choice at the density
    itself draws every input to it (static pruning under another name)."""

    def __init__(self, name: str, description: str) -> None:
        super().__init__(name, "dynamic width gates at network scope: a router picks one of 3 nested widths per input")

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        routed = {"width_scope": "network", "width_switchable_bn": True, "width_gate_target": 1.0}
        routed |= {"width_gate_label": "ranked", "width_narrowest_weight": 1.0}
        return {**super().overrides(cfg, target), **routed}

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        density = 1.0 - max(solve_uniform_for_macs(cost, cell.target).values())
        cell.values["width_choices"] = straddling_widths(density)


def straddling_widths(density: float) -> list[float]:
    """Width choices around a site density: half and twice it (at most halfway to 1), in sixteenths, then 1."""
    narrow = max(1, round(8 * density)) / 16
    wide = max(narrow + 1 / 16, round(16 * min(2 * density, (1 + density) / 2)) / 16)
    return [narrow, wide, 1.0] if wide < 1 else [narrow, 1.0]


class ScratchGates(GatedCompare):
    """Gates trained jointly with the backbone from scratch, for the whole budget of a fine-tuned row (the dense
    model's epochs + the fine-tune's, at the dense lr), the target sliding in over the first quarter, with the
    gentle usage floor. Fine-tuned from a dense model, gates settle on one channel set in early sites; trained with
    the backbone they keep deciding per input (BENCHMARKS, "Gates trained jointly from scratch"), and the floor
    holds every site conditional at 0.1 too at no cost in top-1 ("a gentler usage floor", "Five seeds at 0.1")."""

    from_dense = False
    usage_floor: Mapping[str, float] = MappingProxyType({"gate_usage_weight": 0.05, "gate_usage_floor": 0.02})

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        epochs = cfg.dense_epochs + cfg.epochs  # the dense model's and the fine-tune's steps together
        return {
            **super().overrides(cfg, target),
            "epochs": epochs,
            "lr": cfg.dense_lr,
            "budget_warmup_epochs": epochs / 4,
            **self.usage_floor,
        }


class PolicySearch:
    """A cell whose training uses the per-site ratios of its own RL policy search (``python -m agents.search``,
    run as a subprocess before the training: dynprune never imports agents)."""

    def check_available(self) -> None:
        if importlib.util.find_spec("agents") is None:
            raise ConfigError("methods: rl needs the agents package (install the project with its rl extra)")

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        keep = keep_fractions(cost, dict.fromkeys(cost.site_widths, cfg.search_r_max))
        floor = cost.macs(keep) / cost.dense_macs
        if target < floor:
            raise ConfigError(
                f"rl: target {target} is below {floor:.3f}, what the search reaches at --search-r-max "
                f"{cfg.search_r_max}; raise search_r_max"
            )

    policy_field = "ratios"  # the TrainConfig field the policy file goes to
    algo: str | None = None  # the search's --algo; None: the comparison's search_algo

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        search = cell.run_dir / "search"
        cell.values[self.policy_field] = str(search / "policy.json")
        warmup = 0 if cfg.search_episodes <= 1 else max(1, cfg.search_episodes // 4)
        settings = (
            *("--algo", self.algo or cfg.search_algo, "--episodes", str(cfg.search_episodes)),
            *("--val-subset", str(cfg.search_val_subset), "--r-max", str(cfg.search_r_max)),
            *("--criterion", cfg.search_criterion, "--actions", cfg.search_actions),
            *("--warmup-episodes", str(warmup), "--wandb", cfg.wandb, "--threads", str(cfg.cell_threads)),
            *("--baselines", "none", "--no-progress"),
        )
        check_search_settings(settings)
        cell.search_args = [
            *settings,
            *("--init", cell.values["init"], "--target-macs", str(cell.target)),
            *("--seed", str(cell.seed), "--out", str(search)),
        ]

    def extra_seconds(self, cfg: CompareConfig, cell: Cell, per_image_s: float) -> float:
        # each strategy: adaptive BN (8 x 128 images) and the val subset, forward only
        return cfg.search_episodes * (1024 + cfg.search_val_subset) * per_image_s / 3 * cell.target

    def before_training(self, cell: Cell) -> None:
        """The agent's search runs as ``python -m agents.search`` (dynprune never imports agents)."""
        out = cell.run_dir / "search"
        if (out / "policy.json").is_file():
            return
        args = list(cell.search_args) + (["--resume"] if (out / "cache.jsonl").is_file() else [])
        proc = subprocess.run(  # dies with this process: a killed comparison leaves no search running on
            [sys.executable, "-m", "agents.search", *args], capture_output=True, text=True, preexec_fn=die_with_parent
        )
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        (cell.run_dir / "search.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"{cell.label}: the policy search failed ({last}); see {cell.run_dir}/search.log")


@functools.cache
def check_search_settings(settings: tuple[str, ...]) -> None:
    """The search's own parser checks its settings (``agents.search --dry-run``, a subprocess: dynprune never
    imports agents) when the plan is made: a bad --search-algo is one line then, not a failure after the dense
    model has trained. Once per distinct settings (the target is checked by ``check_target``)."""
    args = [sys.executable, "-m", "agents.search", *settings, "--init", "-", "--dry-run"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("python -m agents.search: ")
        last = last.removeprefix("error: ")
        for flag, field in SEARCH_FIELDS.items():  # say it in the comparison's own terms
            last = last.replace(flag + " ", field + " ")
        raise ConfigError(f"rl: the policy search refuses its settings: {last}")


#: the search's flags and the comparison fields that set them (``PolicySearch.prepare_cell``)
SEARCH_FIELDS = {
    "--algo": "search_algo",
    "--criterion": "search_criterion",
    "--episodes": "search_episodes",
    "--val-subset": "search_val_subset",
    "--r-max": "search_r_max",
    "--actions": "search_actions",
}


class RLMethod(PolicySearch, CompareMethod):
    family = "rl"

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        # the search's criterion prunes the fine-tune too; + ratios from the cell's own search (prepare_cell)
        return {"prune": cfg.search_criterion, "hard": True}


class RLDensityGates(PolicySearch, GatedCompare):
    """The hybrid: the RL agent picks how much each site keeps, the gates pick which channels per input."""

    policy_field = "gate_density"

    def check_target(self, cfg: CompareConfig, cost: CostModel, target: float) -> None:
        PolicySearch.check_target(self, cfg, cost, target)
        GatedCompare.check_target(self, cfg, cost, target)

    def extra_seconds(self, cfg: CompareConfig, cell: Cell, per_image_s: float) -> float:
        return PolicySearch.extra_seconds(self, cfg, cell, per_image_s)


class CompactMethod(CompareMethod):
    """Another (or the same) architecture at the width whose dense MACs match the target, from scratch."""

    family = "compact"
    from_dense, own_architecture = False, True

    def __init__(self, name: str, description: str, model: str | None) -> None:
        super().__init__(name, description)
        self.model = model

    def overrides(self, cfg: CompareConfig, target: float) -> dict[str, Any]:
        return {"model": self.model or cfg.model, "epochs": cfg.dense_epochs, "lr": cfg.dense_lr}

    def prepare_cell(self, cell: Cell, cfg: CompareConfig, cost: CostModel, data_shape: tuple[int, int, int]) -> None:
        channels, size, classes = data_shape
        cell.values["width"] = width_for_macs(
            cell.values["model"], cost.dense_macs * cell.target, channels, classes, size
        )


#: per-estimator TrainConfig values for the comparison's short fine-tunes, chosen on the validation split of
COMPARE_METHODS: Registry[CompareMethod] = Registry("compared method")


COMPARE_METHODS.add(DenseMethod("dense", "the unpruned model"))
for _name, _pruner in PRUNERS.items():  # every static pruner; structured ones hard-pruned
    _how = "channels removed physically (--hard)" if _pruner.structured else "(MACs counted as nonzero-weight MACs)"
    COMPARE_METHODS.add(StaticMethod(_name, f"{_pruner.description}; {_how}", _pruner.structured))
#: estimators whose comparison cell is its own class (every other one: ``GatedCompare`` with the estimator's recipe)
GATED_CELLS: dict[str, type[GatedCompare]] = {"width": WidthCompare}
for _name, _estimator in ESTIMATORS.items():  # every gate estimator, with its recipe for short fine-tunes
    COMPARE_METHODS.add(GATED_CELLS.get(_name, GatedCompare)(_name, f"dynamic {_name} gates: {_estimator.summary}"))
    for _variant, (_recipe, _what) in _estimator.variants.items():  # other measured starts, named for what they are
        _recipe = {**_estimator.recipe, **_recipe}
        COMPARE_METHODS.add(GatedCompare(f"{_name}-{_variant}", f"{_name} gates, {_what}", _name, _recipe))
COMPARE_METHODS.add(
    ScratchGates("topk-scratch", "topk gates trained with the backbone from scratch (no dense start)", "topk")
)
COMPARE_METHODS.add(
    RLMethod("rl", "per-site ratios searched by an RL agent (agents.search), then fine-tuned as its criterion's pruner")
)


class RandomSearchMethod(RLMethod):
    """The rl cell's evaluator and budget walls without an agent: what the agent adds over random strategies."""

    algo = "random"


COMPARE_METHODS.add(
    RandomSearchMethod(
        "random-search", "per-site ratios: the best of as many random budget-meeting strategies as rl tries"
    )
)
COMPARE_METHODS.add(
    RLDensityGates(
        "topk-rl",
        "hybrid: per-site densities from an RL search (policy.json), topk gates choose the channels per input",
        gate="topk",
    )
)
COMPARE_METHODS.add(
    CascadeMethod("cascade", "a confidence cascade of two l1-filter fine-tunes (half and twice the target), one budget")
)
COMPARE_METHODS.add(
    ShallowCascadeMethod(
        "cascade-shallow", "cascade with a ResNet-8 cut out of the dense model first (faster than its twin at batch 1)"
    )
)
COMPARE_METHODS.add(CompactMethod("narrow", "the same model at a width multiplier of matched MACs, from scratch", None))
COMPARE_METHODS.add(CompactMethod("mobilenetv2", "MobileNetV2 at a width of matched MACs, from scratch", "mobilenetv2"))


def compare_method(name: str) -> CompareMethod:
    if name not in COMPARE_METHODS:
        raise ConfigError(f"methods: unknown method {name!r}; known: {', '.join(COMPARE_METHODS.names())}")
    return COMPARE_METHODS[name]


def cell_method(cell: Cell) -> CompareMethod:
    return COMPARE_METHODS[cell.method]
