"""Every built-in training method, and the one way from a config (or a checkpoint) to a method and its model.

The one module above the method packages that imports them all (registration is explicit: this list, no import
kept for its side effect); every entry point (the train CLI, the comparison harness, the benchmarks, rebuilding
a run from its checkpoint) goes through it. A method family joins by adding its ``MethodSpec`` to
``TRAINING_METHODS``; its variants (estimators, pruners) join their own registries in their packages.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .base import ConfigError, flag, given_fields
from .checkpoints import load_checkpoint
from .config import Groups, TrainConfig, build, field_owners, parse_cli
from .gates.method import GATED
from .methods import DENSE, Method, MethodSpec
from .models import input_shape, model_for_arch, model_recipe
from .models.registry import MODELS
from .prune.method import STATIC
from .registry import Registry

TRAINING_METHODS: Registry[MethodSpec] = Registry("training method")
for _spec in (DENSE, GATED, STATIC):
    TRAINING_METHODS.add(_spec)


def option_groups() -> Groups:
    """Every family's option groups (their fields are flags of ``python -m dynprune.train``)."""
    groups: dict[str, type] = {}
    for spec in TRAINING_METHODS.items():
        groups.update(spec[1].option_groups())
    return groups


def method_spec(cfg: TrainConfig) -> tuple[MethodSpec, str]:
    """(the family a config selects, its variant); one clear error for an unknown name or two selectors."""
    chosen = []
    for _, spec in TRAINING_METHODS.items():
        if spec.selector is None:
            continue
        variant = getattr(cfg, spec.selector)
        if variant == "none":
            continue
        if variant not in spec.variants():
            known = ", ".join(["none", *spec.variants()])
            raise ConfigError(f"--{spec.selector} got {variant!r}; known: {known}")
        chosen.append((spec, variant))
    if len(chosen) > 1:
        flags = " and ".join(f"--{spec.selector}" for spec, _ in chosen)
        raise ConfigError(f"{flags} are different methods; choose one")
    return chosen[0] if chosen else (DENSE, "dense")


def train_config(values: Mapping[str, Any]) -> TrainConfig:
    """A validated TrainConfig (method options included) from flat values, e.g. a saved config.yaml."""
    cfg = build(TrainConfig, values, option_groups())
    method_spec(cfg)
    return cfg


def recipe_defaults(chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults the chosen model and method variant bring (model first, so a method's recipe wins where both
    set a value); unknown names bring none (validation reports them)."""
    model = chosen.get("model", TrainConfig.model)
    values = dict(model_recipe(model)) if model in MODELS else {}
    for _, spec in TRAINING_METHODS.items():
        variant = chosen.get(spec.selector, "none") if spec.selector else "none"
        if variant in spec.variants():
            values.update(spec.recipe(variant))
    return values


def recipes_help() -> str:
    """The --help epilog: which defaults each model and method variant changes."""
    lines = ["defaults that follow the choice of --model or method (flags and --config override them):"]
    for name in MODELS.names():
        lines.append(f"  --model {name}: " + _values(model_recipe(name)))
    for _, spec in TRAINING_METHODS.items():
        for variant in spec.variants() if spec.selector else []:
            if spec.recipe(variant):
                lines.append(f"  --{spec.selector} {variant}: " + _values(spec.recipe(variant)))
    return "\n".join(lines)


def _values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"--{flag(k)} {v}" for k, v in values.items()) or "(the general defaults)"


def parse_train_cli(
    argv: Sequence[str] | None, prog: str, description: str, preset: Mapping[str, Any] | None = None
) -> TrainConfig:
    cfg = parse_cli(TrainConfig, argv, prog, description, option_groups(), recipe_defaults, recipes_help(), preset)
    try:
        check_flags_belong(cfg, given_fields(sys.argv[1:] if argv is None else argv))
        method_from_config(cfg)  # options that contradict the method (e.g. width gates' per-channel ones) now
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg


def check_flags_belong(cfg: TrainConfig, given: set[str]) -> None:
    """A flag of a method the run does not use (``--tau-start`` with ``--gate topk``, ``--hard`` with gates) would
    be ignored without a word: one clear error instead, naming whose flag it is."""
    spec, variant = method_spec(cfg)
    owners = field_owners(TrainConfig, option_groups())
    for name in sorted(given):
        group = owners.get(name)
        if group is None or (spec.option_groups().get(group) is not None and group in (spec.family, variant)):
            continue
        owner = next(s for _, s in TRAINING_METHODS.items() if group in s.option_groups())
        whose = f"--{owner.selector} runs" if group == owner.family else f"--{owner.selector} {group}"
        this = f"--{spec.selector} {variant}" if spec.selector else "a dense run"
        raise ConfigError(f"--{flag(name)} is an option of {whose}; this run is {this}, which would ignore it")


def method_from_config(cfg: TrainConfig) -> Method:
    """The method a config asks for: dense, static pruning, or gates with their estimator and budget."""
    spec, variant = method_spec(cfg)
    return spec.build(cfg, variant)


def config_of_checkpoint(ckpt: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig from a checkpoint's saved flat config (older checkpoints: their keys all exist)."""
    return train_config(ckpt.get("config") or {})


def rebuild_from_checkpoint(path: str | Path) -> tuple[nn.Module, Method, dict[str, Any]]:
    """(the trained model in eval mode, its method, the checkpoint), through the run's own method entry: gated
    runs get their gates back, pruned runs their narrower shapes and masks."""
    ckpt = load_checkpoint(path)
    arch = ckpt["arch"]
    method = method_from_config(config_of_checkpoint(ckpt))
    model = method.rebuild(model_for_arch(arch), ckpt, input_shape(arch), str(path))
    return model, method, ckpt
