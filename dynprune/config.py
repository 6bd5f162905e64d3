"""Typed configuration: dataclass defaults < YAML preset (``--config``) < command-line flags.

The CLI is generated from the dataclass fields with the standard library's argparse rather than a heavier
CLI library: it gives exact control over errors (one line saying what is wrong and what is allowed, exit
code 2, no traceback), lets a YAML preset supply the defaults that flags then override, and adds no
dependency. Every field's help text lives next to the field in ``metadata``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


def option(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):  # a fresh copy per instance: never a shared mutable default
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the field."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"--{_flag(name)} must not be empty")
    if typing.get_origin(base) is list:  # a YAML list, or "a,b,c" on the command line
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"--{_flag(name)} expects a list, got {value!r}")
        return [
            _coerce(name, typing.get_args(base)[0], item.strip() if isinstance(item, str) else item) for item in items
        ]
    if typing.get_origin(base) is Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise ConfigError(f"--{_flag(name)} got {value!r}; allowed: {', '.join(map(str, allowed))}")
        return value
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{_flag(name)} expects {base.__name__}, got {value!r}") from None


def _flag(name: str) -> str:
    return name.replace("_", "-")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def load_yaml(cls: type[C], path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key.replace("-", "_") not in names:
            raise ConfigError(f"--config {path}: unknown key {key!r}; allowed: {', '.join(sorted(names))}")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def build(cls: type[C], values: dict[str, Any]) -> C:
    """Instantiate ``cls`` from raw values, coercing each one and running the class's ``validate()``."""
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    cfg = cls(**coerced)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def parse_cli(cls: type[C], argv: Sequence[str] | None, prog: str, description: str) -> C:
    """Parse ``argv`` into ``cls``; a bad value exits with one line on stderr and status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = _OneLineParser(prog=prog, add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        preset = load_yaml(cls, known.config) if known.config else {}
    except ConfigError as exc:
        pre.exit(2, f"{prog}: error: {exc}\n")

    parser = _OneLineParser(prog=prog, description=description)
    parser.add_argument("--config", default=None, help="YAML preset; flags given here override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base, _ = _unwrap_optional(hints[f.name])
        default = preset.get(f.name, _default(f))
        helptext = f"{f.metadata.get('help', '')} (default: {default})"
        if base is bool:
            parser.add_argument(
                f"--{_flag(f.name)}",
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=helptext,
            )
        else:
            parser.add_argument(f"--{_flag(f.name)}", dest=f.name, default=None, help=helptext, metavar="X")
    args = vars(parser.parse_args(argv))
    args.pop("config")
    values = dict(preset)
    values.update({k: v for k, v in args.items() if v is not None})
    try:
        return build(cls, values)
    except ConfigError as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_yaml(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; saved as config.yaml next to its results."""

    model: str = option("resnet20", "zoo model (see dynprune.models.list_models())")
    width: float = option(1.0, "channel width multiplier of the model")
    dataset: str = option("fashion-mnist", "fashion-mnist | mnist | cifar10 | cifar100 | synthetic")
    data_dir: str | None = option(None, "folder holding the data sets (else $DYNPRUNE_DATA, else ./data)")
    download: bool = option(True, "download missing data files from their official addresses")
    image_size: int = option(224, "imagefolder: images resized and center-cropped to this size")
    image_memory_gb: float = option(4.0, "imagefolder: a split bigger than this decoded is streamed from disk")
    val_size: int = option(5000, "validation images carved from the training set (fixed seed)")
    train_subset: int = option(0, "train on the first N training images only (0 = all); for smoke runs")
    epochs: int = option(9, "training epochs")
    batch_size: int = option(128, "training batch size")
    eval_batch_size: int = option(512, "batch size for validation and test")
    lr: float = option(0.2, "peak learning rate (SGD, Nesterov momentum)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "L2 weight decay (not applied to BN and biases)")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy loss")
    schedule: Literal["onecycle", "cosine"] = option("onecycle", "learning-rate schedule, stepped per batch")
    warmup_epochs: float = option(1.0, "linear warm-up epochs of the cosine schedule")
    seed: int = option(0, "seed of weights, data order, augmentation")
    device: str = option("auto", "auto (CUDA if present) | cpu | cuda | cuda:N")
    threads: int = option(0, "CPU threads for torch (0 = torch's default)")
    sync_bn: bool = option(False, "torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm)")
    channels_last: bool = option(True, "channels-last memory format (measured faster on CPU)")
    amp: bool = option(True, "bfloat16 mixed precision on CUDA (ignored on CPU)")
    gate: str = option("none", "dynamic gates: gumbel | ste | none (dense)")
    target_macs: float = option(0.5, "gated and static: mean per-sample MACs / dense MACs (gate MACs included)")
    budget_weight: float = option(50.0, "gated: weight of (E[MACs]/MACs_dense - target)^2")
    balance_weight: float = option(1.0, "gated: weight of the per-site open-rate bounds [0.05, 0.95]")
    budget_warmup_epochs: float = option(1.0, "gated: epochs over which the target slides from 1 to --target-macs")
    tau_start: float = option(1.0, "gumbel: temperature at the first step (decays exponentially)")
    tau_end: float = option(0.5, "gumbel: temperature at the last step")
    noise_fade: float = option(0.0, "gumbel: last fraction of the run over which the gate noise fades to 0")
    gate_hard: bool = option(True, "gumbel: hard 0/1 forward with straight-through gradient")
    ste_grad: Literal["sigmoid", "identity"] = option("sigmoid", "ste: backward of the threshold")
    gate_groups: int = option(1, "gated: channels decided together by one logit (1 = per channel)")
    gate_reduction: int = option(4, "gated: hidden width of the gate MLP = max(4, C_in / reduction)")
    gate_bias_init: float = option(2.0, "gated: initial gate logit bias (2 -> 88%% open)")
    prune: str = option("none", "static pruning method (see python -m dynprune.prune list) or none")
    ratio: float | None = option(None, "static: the same pruning ratio at every site/layer, in [0, 1)")
    ratios: str | None = option(None, "static: JSON file {site name: ratio} (e.g. an RL policy.json)")
    prune_steps: int = option(1, "static: pruning events (1 = one-shot), spread over the first half of training")
    prune_schedule: Literal["cubic", "linear"] = option("cubic", "static: ramp of the ratio over the events")
    hard: bool = option(False, "static structured: remove pruned channels physically at the end")
    calibrate_budget: bool = option(True, "gated: after training, shift gate logits on val to hit the target")
    out: str | None = option(None, "run folder (default runs/<method>): config.yaml, checkpoint.pt, result.json")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    init: str | None = option(None, "start from the weights of this checkpoint (same model and shape)")
    wandb: Literal["offline", "online", "disabled"] = option("offline", "wandb mode; offline needs no account")
    wandb_project: str = option("dynprune", "wandb project name")
    wandb_group: str | None = option(None, "wandb group (a comparison puts all its runs in one)")
    latency: bool = option(True, "measure inference latency (batch 1 and 64) for result.json")
    progress: bool = option(True, "progress bar (shown only when stderr is a terminal)")

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.method_name}")

    @property
    def method_name(self) -> str:
        if self.gate != "none":
            return self.gate
        return self.prune if self.prune != "none" else "dense"

    def validate(self) -> None:
        from .data import DATASET_NAMES
        from .models import list_models

        if self.model not in list_models():
            raise ConfigError(f"--model got {self.model!r}; known: {', '.join(list_models())}")
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"--dataset got {self.dataset!r}; known: {', '.join(DATASET_NAMES)}")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "lr": self.lr,
            "width": self.width,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{_flag(name)} must be > 0, got {value}")
        nonneg = {
            "train_subset": self.train_subset,
            "val_size": self.val_size,
            "threads": self.threads,
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
        }
        for name, value in nonneg.items():
            if value < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {value}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"--device got {self.device!r}; allowed: auto, cpu, cuda, cuda:N")
        self._validate_gates()
        self._validate_pruning()

    def _validate_gates(self) -> None:
        from .gates.estimators import ESTIMATORS

        known = ("none", *ESTIMATORS.names())
        if self.gate not in known:
            raise ConfigError(f"--gate got {self.gate!r}; known: {', '.join(known)}")
        if not 0 < self.target_macs <= 1:
            raise ConfigError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        for name in ("tau_start", "tau_end", "gate_groups", "gate_reduction"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")
        for name in ("budget_weight", "balance_weight", "budget_warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.noise_fade <= 1:
            raise ConfigError(f"--noise-fade must be a fraction of the run in [0, 1], got {self.noise_fade}")

    def _validate_pruning(self) -> None:
        from .prune import METHOD_NAMES

        known = ("none", *METHOD_NAMES)
        if self.prune not in known:
            raise ConfigError(f"--prune got {self.prune!r}; known: {', '.join(known)}")
        if self.prune != "none" and self.gate != "none":
            raise ConfigError("--prune and --gate are different methods; choose one")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise ConfigError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.ratio is not None and self.ratios is not None:
            raise ConfigError("--ratio and --ratios both given; choose one")
        if self.prune_steps < 1:
            raise ConfigError(f"--prune-steps must be >= 1, got {self.prune_steps}")
