"""Recipes: the defaults a chosen model or gate estimator brings, layered under presets and flags."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dynprune.api import build_method
from dynprune.base import ConfigError
from dynprune.catalog import option_groups, parse_train_cli, recipe_defaults
from dynprune.compare.config import CompareConfig
from dynprune.compare.methods import COMPARE_METHODS
from dynprune.config import TrainConfig, field_owners
from dynprune.gates.estimators import ESTIMATORS
from dynprune.models import list_models, model_recipe


def test_every_zoo_model_has_a_recipe_of_known_fields():
    known = set(field_owners(TrainConfig, option_groups()))
    for name in list_models():
        recipe = model_recipe(name)
        assert {"lr", "schedule", "weight_decay"} <= set(recipe), name
        assert set(recipe) <= known, name


def test_every_estimator_recipe_names_known_options():
    known = set(field_owners(TrainConfig, option_groups()))
    for name, estimator in ESTIMATORS.items():
        assert set(estimator.recipe) <= known, name
    assert ESTIMATORS["gumbel"].recipe["gate_density"] == "uniform"


def test_gate_recipe_is_the_default_and_flags_override_it():
    cfg = parse_train_cli(["--gate", "gumbel"], "t", "")
    gate = cfg.options["gated"]
    assert (gate.gate_init, gate.gate_density, gate.budget_weight) == ("pool", "uniform", 20.0)
    assert (gate.guide_weight, gate.gate_boost) == (1.0, True)  # started to decide per input
    assert cfg.options["gumbel"].noise_fade == 0.5

    cfg = parse_train_cli(["--gate", "gumbel", "--gate-density", "global", "--budget-weight", "7"], "t", "")
    assert (cfg.options["gated"].gate_density, cfg.options["gated"].budget_weight) == ("global", 7.0)
    assert cfg.options["gated"].gate_init == "pool"  # what was not given still follows the recipe

    dense = parse_train_cli([], "t", "")
    assert dense.options["gated"].gate_init == "open"  # no gate chosen: the dataclass defaults


def test_model_recipe_under_preset_and_flags(tmp_path):
    cfg = parse_train_cli(["--model", "lenet5"], "t", "")
    assert (cfg.lr, cfg.schedule, cfg.warmup_epochs) == (0.1, "cosine", 0.0)
    assert parse_train_cli(["--model", "lenet5", "--lr", "0.3"], "t", "").lr == 0.3
    preset = tmp_path / "p.yaml"
    preset.write_text("model: lenet5\nschedule: onecycle\n")
    cfg = parse_train_cli(["--config", str(preset)], "t", "")
    assert (cfg.lr, cfg.schedule) == (0.1, "onecycle")  # the model chosen in the preset brings its lr


def test_recipe_defaults_ignore_unknown_names():
    assert recipe_defaults({"model": "nosuchnet", "gate": "nosuchgate"}) == {}


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_comparison_gated_cells_use_the_estimator_recipe(name):
    overrides = COMPARE_METHODS[name].overrides(CompareConfig(), 0.25)
    for key, value in ESTIMATORS[name].recipe.items():
        assert overrides[key] == value
    assert overrides["gate"] == name and overrides["target_macs"] == 0.25


def test_resume_values_are_not_replaced_by_recipes(tmp_path):
    saved = tmp_path / "config.yaml"
    flags = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)]  # not options, given
    flat = {f.name: getattr(TrainConfig(), f.name) for f in flags}
    flat.update(gate="ste", gate_init="open", gate_density="global", budget_weight=50.0)
    saved.write_text(yaml.safe_dump(flat))
    cfg = parse_train_cli(["--config", str(saved)], "t", "")
    assert (cfg.options["gated"].gate_init, cfg.options["gated"].gate_density) == ("open", "global")


PER_GROUP_LOGITS = [name for name, estimator in ESTIMATORS.items() if "l1" in estimator.variants]


def test_only_gates_without_a_logit_per_channel_lack_the_static_start():
    for name in set(ESTIMATORS.names()) - set(PER_GROUP_LOGITS):  # width: one logit per width, no l1 start
        with pytest.raises(ConfigError, match="--gate-init must be open"):
            build_method({"gate": name, "gate_init": "l1"})


@pytest.mark.parametrize("name", PER_GROUP_LOGITS)
def test_the_static_start_stays_available_under_a_name_that_says_so(name):
    overrides = COMPARE_METHODS[f"{name}-l1"].overrides(CompareConfig(), 0.25)
    assert (overrides["gate_init"], overrides["guide_weight"], overrides["gate_boost"]) == ("l1", 0.0, False)
    assert overrides["gate"] == name
    assert "static" in COMPARE_METHODS[f"{name}-l1"].description
    cfg = parse_train_cli(["--gate", name, "--gate-init", "l1", "--guide-weight", "0", "--no-gate-boost"], "t", "")
    gate = cfg.options["gated"]
    assert (gate.gate_init, gate.guide_weight, gate.gate_boost) == ("l1", 0.0, False)  # the README's static start
