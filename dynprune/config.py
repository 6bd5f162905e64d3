"""Typed configuration: dataclass defaults < YAML preset (``--config``) < command-line flags.

The CLI is generated from the dataclass fields with the standard library's argparse rather than a heavier
CLI library: it gives exact control over errors (one line saying what is wrong and what is allowed, exit
code 2, no traceback), lets a YAML preset supply the defaults that flags then override, and adds no
dependency. Every field's help text lives next to the field in ``metadata``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .base import ConfigError, check_non_negative, check_positive, check_target_macs, check_threads, flag, option

__all__ = ["ConfigError", "TrainConfig", "build", "option", "parse_cli"]

C = TypeVar("C")


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
        raise ConfigError(f"--{flag(name)} must not be empty")
    if typing.get_origin(base) is list:  # a YAML list, or "a,b,c" on the command line
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"--{flag(name)} expects a list, got {value!r}")
        return [
            _coerce(name, typing.get_args(base)[0], item.strip() if isinstance(item, str) else item) for item in items
        ]
    if typing.get_origin(base) is Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise ConfigError(f"--{flag(name)} got {value!r}; allowed: {', '.join(map(str, allowed))}")
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
        if base in (int, float) and isinstance(value, bool):  # YAML's true is not the number 1
            raise ValueError
        converted = base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{flag(name)} expects {base.__name__}, got {value!r}") from None
    if base is float and not math.isfinite(converted):  # nan and inf parse as floats but train nothing
        raise ConfigError(f"--{flag(name)} must be a finite number, got {value!r}")
    return converted


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


#: option groups a config is built with: {group name: options dataclass}. A method family owns its group (the
#: catalog collects them), its fields are flags like the config's own, and the built config holds one instance of
#: each in ``cfg.options[group]``.
Groups = Mapping[str, type]


def _cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def field_owners(cls: type, groups: Groups | None = None) -> dict[str, str | None]:
    """Every flag's field name -> the group that owns it (None: ``cls`` itself). Names are unique across groups."""
    owners: dict[str, str | None] = {f.name: None for f in _cli_fields(cls)}
    for group, group_cls in (groups or {}).items():
        for f in dataclasses.fields(group_cls):
            if f.name in owners:
                raise ValueError(f"option {f.name!r} of {group!r} is declared twice (also by {owners[f.name]!r})")
            owners[f.name] = group
    return owners


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(cls: type[C], path: str | Path, groups: Groups | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not a text file (a YAML preset of field: value lines)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value")
    names = set(field_owners(cls, groups))
    for key in raw:
        if key.replace("-", "_") not in names:
            raise ConfigError(f"--config {path}: unknown key {key!r}; allowed: {', '.join(sorted(names))}")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def _instance(cls: type[C], values: Mapping[str, Any]) -> C:
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, hints[k], v) for k, v in values.items()})


def _validate(obj: Any) -> None:
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()


def build(cls: type[C], values: Mapping[str, Any], groups: Groups | None = None) -> C:
    """Instantiate ``cls`` (and one instance per option group, in ``cfg.options``) from raw flat values, coercing
    each one and running every ``validate()``."""
    owners = field_owners(cls, groups)
    unknown = sorted(set(values) - set(owners))
    if unknown:
        raise ConfigError(f"unknown option {flag(unknown[0])!r}; see --help for the options")
    cfg = _instance(cls, {k: v for k, v in values.items() if owners[k] is None})
    if groups:
        cfg.options = {
            group: _instance(group_cls, {k: v for k, v in values.items() if owners[k] == group})
            for group, group_cls in groups.items()
        }
        for options in cfg.options.values():
            _validate(options)
    _validate(cfg)
    return cfg


def _add_flags(parser: Any, cls: type, preset: Mapping[str, Any]) -> None:
    """One flag per field; a field declared ``option(..., positional=True)`` is a positional argument instead
    (required; a list takes one or more words), and one declared ``option([...], ..., repeatable=True)`` is a list
    flag that may also be given several times (``--x a,b --x c`` = ``--x a,b,c``)."""
    hints = typing.get_type_hints(cls)
    for f in _cli_fields(cls):
        base, _ = _unwrap_optional(hints[f.name])
        default = preset.get(f.name, _default(f))
        if f.metadata.get("positional"):
            is_list = typing.get_origin(base) is list
            item_type = typing.get_args(base)[0] if is_list else hints[f.name]

            def coerce_word(word: str, name: str = f.name, tp: Any = item_type) -> Any:
                try:  # each word whole (a path may hold a comma); build() then coerces and validates as for a flag
                    return _coerce(name, tp, word)
                except ConfigError as exc:  # "argument NAME: expects int, got 'x'", not a flag that does not exist
                    raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--{flag(name)} ")) from None

            parser.add_argument(
                f.name,
                nargs="+" if is_list else None,
                type=coerce_word,
                help=f.metadata.get("help", ""),
                metavar=flag(f.name),
            )
            continue
        choices = f.metadata.get("choices")
        allowed = f"; one of: {' | '.join(choices())}" if choices else ""
        helptext = f"{f.metadata.get('help', '')}{allowed} (default: {default})"
        if base is bool:
            parser.add_argument(
                f"--{flag(f.name)}",
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=helptext,
            )
        elif f.metadata.get("repeatable") and typing.get_origin(base) is list:
            parser.add_argument(
                f"--{flag(f.name)}", dest=f.name, action="append", default=None, help=helptext, metavar="X"
            )
        else:
            parser.add_argument(f"--{flag(f.name)}", dest=f.name, default=None, help=helptext, metavar="X")


#: the non-flag field of a config class in which ``parse_cli`` records the names the preset or a flag set (a value
#: the user chose, as opposed to a default or a recipe's)
GIVEN = "given"

#: the defaults a choice brings (e.g. the chosen model's or estimator's recipe), from the values chosen so far
RecipeFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def parse_cli(
    cls: type[C],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    groups: Groups | None = None,
    recipe: RecipeFn | None = None,
    epilog: str | None = None,
    preset: Mapping[str, Any] | None = None,
) -> C:
    """Parse ``argv`` into ``cls``; a bad value exits with one line on stderr and status 2.

    Values are layered: the fields' defaults, then ``recipe(chosen)`` (defaults that depend on what the preset
    and flags chose), then the preset (``--config``, else ``preset``: e.g. a resumed run's own config), then the
    flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = _OneLineParser(prog=prog, add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        preset = load_yaml(cls, known.config, groups) if known.config else dict(preset or {})
    except ConfigError as exc:
        pre.exit(2, f"{prog}: error: {exc}\n")

    parser = _OneLineParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML preset; flags given here override it")
    _add_flags(parser, cls, preset)
    for group, group_cls in (groups or {}).items():
        if dataclasses.fields(group_cls):
            _add_flags(parser.add_argument_group(f"{group} options"), group_cls, preset)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    for owner in (cls, *(groups or {}).values()):  # a repeatable flag given several times: one comma list
        for f in _cli_fields(owner):
            if f.metadata.get("repeatable") and args.get(f.name) is not None:
                args[f.name] = ",".join(args[f.name])
    chosen = {**preset, **{k: v for k, v in args.items() if v is not None}}
    try:
        cfg = build(cls, {**(recipe(chosen) if recipe else {}), **chosen}, groups)
    except ConfigError as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")
    if GIVEN in {f.name for f in dataclasses.fields(cls)}:  # a config that asks which values the user chose
        setattr(cfg, GIVEN, frozenset(chosen))
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The flat mapping of every flag's value (a config's own and its option groups'): what config.yaml holds
    and ``build`` reads back."""
    flat = {f.name: getattr(cfg, f.name) for f in _cli_fields(cfg)}
    for options in (getattr(cfg, "options", None) or {}).values():
        flat.update(dataclasses.asdict(options))
    return {k: list(v) if isinstance(v, list) else v for k, v in flat.items()}


def save_yaml(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


#: fields a resumed run may set anew (they change neither the weights nor the result's figures)
MAY_DIFFER = frozenset({"resume", "out", "threads", "device", "progress", "wandb", "wandb_project", "wandb_group"})


def check_same_run(saved: Mapping[str, Any], now: Mapping[str, Any], source: str) -> None:
    """One clear error where ``now`` (the config a resume would run) differs from ``saved`` (the config the run
    was started with, as its checkpoint holds it) in a field that changes the result."""
    for name in sorted(set(saved) - MAY_DIFFER):
        if name in now and saved[name] != now[name]:
            raise ConfigError(
                f"--resume: {source} was started with {name}: {saved[name]!r}, this resume would run "
                f"{now[name]!r} (a changed or missing config.yaml, another --config, or a flag); the checkpoint's "
                f"config is the run's: resume with --out alone"
            )


# --------------------------------------------------------------------------------------------- training
def _data_set_names() -> tuple[str, ...]:
    from .data import DATASET_NAMES  # imported on use: the data module pulls in torch's readers

    return DATASET_NAMES


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; saved as config.yaml next to its results."""

    model: str = option(
        "resnet20", "zoo model (see dynprune.models.list_models()), or your own as package.module:callable"
    )
    width: float = option(1.0, "channel width multiplier of the model")
    dataset: str = option(
        "fashion-mnist",
        "the data set (the default falls back to the shipped fashion-mnist-sample where its files can be neither "
        "found nor downloaded)",
        choices=lambda: _data_set_names(),
    )
    data_dir: str | None = option(None, "folder holding the data sets (else $DYNPRUNE_DATA, else ./data)")
    download: bool = option(True, "download missing data files from their official addresses")
    image_size: int = option(224, "imagefolder: images resized and center-cropped to this size")
    image_memory_gb: float = option(4.0, "imagefolder: a split bigger than this decoded is streamed from disk")
    val_size: int = option(5000, "validation images carved from the training set (fixed seed)")
    train_subset: int = option(0, "train on the first N training images only (0 = all); for smoke runs")
    test_subset: int = option(0, "score the first N test images only (0 = all; result.json says how many); smoke runs")
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
    gate: str = option("none", "dynamic gates: an estimator (python -m dynprune.train --help lists them) or none")
    prune: str = option("none", "static pruning method (see python -m dynprune.prune list) or none")
    target_macs: float = option(0.5, "gated and static: mean per-sample MACs / dense MACs (gate MACs included)")
    out: str | None = option(None, "run folder (default runs/<method>): config.yaml, checkpoint.pt, result.json")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    init: str | None = option(None, "start from this checkpoint's weights (same model, or a bigger CIFAR ResNet: cut)")
    distill: str | None = option(None, "knowledge distillation from this checkpoint's model (e.g. the dense run)")
    distill_temperature: float = option(4.0, "distill: softmax temperature T of teacher and student")
    distill_weight: float = option(0.5, "distill: weight w of T^2 KL; the task loss gets 1 - w")
    wandb: Literal["offline", "online", "disabled"] = option("offline", "wandb mode; offline needs no account")
    wandb_project: str = option("dynprune", "wandb project name")
    wandb_group: str | None = option(None, "wandb group (a comparison puts all its runs in one)")
    latency: bool = option(True, "measure inference latency (batch 1 and 64) for result.json")
    progress: bool = option(True, "progress bar (shown only when stderr is a terminal)")
    # The method families' own options ({group: options}); ``build`` fills it from the flat flags.
    options: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={"cli": False})
    # The fields the --config preset or a flag set, where ``parse_cli`` built the config; None (not known: a config
    # built from values, such as a saved config.yaml or a comparison's cell) counts every value as chosen. A default
    # may be replaced where it cannot work (the data set: ``runner.data_set``), a value the user chose never. Not
    # part of a config's value: two configs of the same values are equal however they were given.
    given: frozenset[str] | None = dataclasses.field(default=None, metadata={"cli": False}, compare=False)

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.method_name}")

    @property
    def method_name(self) -> str:
        """The variant of the one method selector set (``--gate`` or ``--prune``), else dense (the catalog
        checks that at most one is set and that the name is known)."""
        return next((v for v in (self.gate, self.prune) if v != "none"), "dense")

    def validate(self) -> None:
        from .data import DATASET_NAMES
        from .models import list_models
        from .models.entry import is_entry_point, load_entry_point

        if is_entry_point(self.model):
            load_entry_point(self.model)  # importable and callable: one line now, not a traceback later
        elif self.model not in list_models():
            raise ConfigError(
                f"--model got {self.model!r}; known: {', '.join(list_models())}, or package.module:callable"
            )
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"--dataset got {self.dataset!r}; known: {', '.join(DATASET_NAMES)}")
        check_positive(self, "epochs", "batch_size", "eval_batch_size", "lr", "width")
        check_non_negative(self, "train_subset", "test_subset", "val_size", "weight_decay", "warmup_epochs")
        check_threads(self.threads)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        index = self.device.removeprefix("cuda:") if self.device.startswith("cuda:") else "0"
        if self.device not in ("auto", "cpu", "cuda") and not (self.device.startswith("cuda:") and index.isdigit()):
            raise ConfigError(f"--device got {self.device!r}; allowed: auto, cpu, cuda, cuda:N (N >= 0)")
        check_target_macs(self.target_macs)
        check_positive(self, "distill_temperature")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"--distill-weight must be in [0, 1], got {self.distill_weight}")
