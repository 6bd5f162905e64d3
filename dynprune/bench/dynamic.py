"""Latency of dense (BN folded), masked and deploy execution of gated models, as rows for a table/JSON.

Gates for speed measurements may be random: the time depends on which channels are open, not on accuracy.
Random gates get per-sample decisions (random weights) and a bias shift found by bisection so that the mean
per-sample MACs on random inputs match the target.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn

from ..api import build_method
from ..base import ConfigError, check_positive, option
from ..checkpoints import load_checkpoint
from ..config import parse_cli
from ..data import data_of_checkpoint
from ..fold import fold_bn
from ..gates.calibrate import find_logit_shift
from ..gates.deploy import to_deploy
from ..gates.estimators import ESTIMATORS
from ..gates.method import GatedMethod
from ..loader import BatchLoader
from ..models import create_model, list_models
from ..outputs import check_output_file
from ..rebuild import gated_model_from_checkpoint, is_gated_checkpoint, pruned_and_dense_from_checkpoint
from ..runtimes import RUNTIMES
from ..timing import interleaved_timing, round_ratio
from .breakdown import BreakdownRow, breakdown_row, format_breakdown
from .executors import ROUTED_B1_IMAGES, Executors, GatedCase, image_by_image
from .speed_rows import SpeedRow, format_table, print_progress, rows_as_dicts
from .twins import without_gates

#: (input shape, classes) each zoo model is benchmarked at
BENCH_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet18": ((3, 224, 224), 1000),
    "mobilenetv2": ((3, 32, 32), 10),
}
DEFAULT_SHAPE = ((3, 32, 32), 10)


def mean_macs_ratio(model: nn.Module, method: GatedMethod, x: torch.Tensor) -> float:
    """Mean per-sample MACs / dense MACs of the gated (training-form, eval-mode) model's decisions on ``x``."""
    with torch.no_grad():
        model(x)
    return method.cost.macs_from_masks(model.gate_set.masks).mean().item() / method.dense_macs


def random_gated_model(
    name: str, target: float, seed: int = 0, gate: str = "topk", width_scope: str = "site"
) -> tuple[nn.Module, GatedMethod, tuple[int, ...]]:
    """A zoo model with random gates of estimator ``gate`` (``topk``: a fixed k per site) at ``target``."""
    shape, classes = BENCH_SHAPES.get(name, DEFAULT_SHAPE)
    torch.manual_seed(seed)
    model = create_model(name, shape[0], classes, shape[-1])
    plain_gates = {"gate": gate, "target_macs": min(target, 1.0), "calibrate_budget": False}
    if gate == "width":
        plain_gates["width_scope"] = width_scope
    method = cast(GatedMethod, build_method(plain_gates, recipe=False))  # a known --gate: gates
    model = method.prepare(model, shape).eval()
    for gate in model.gate_set.gates.values():
        nn.init.normal_(gate.fc2.weight, std=0.5)
        nn.init.normal_(gate.fc2.bias, std=0.5)
    x = torch.randn(32, *shape)

    def ratio_at(shift: float) -> float:
        model.gate_set.logit_shift = shift
        return mean_macs_ratio(model, method, x)

    model.gate_set.logit_shift = find_logit_shift(ratio_at, target, tolerance=0.01).shift  # the best, not the last
    model.gate_set.fold_logit_shift()
    return model, method, shape


@dataclass(frozen=True)
class Timing:
    """How every row of one benchmark run is timed."""

    batch_sizes: Sequence[int]
    threads: int
    min_run_time: float
    device: str = "cpu"
    runtimes: Sequence[str] = ("eager",)
    gate: str = "topk"  # estimator of the random gates
    width_scope: str = "site"  # of random width gates: network = one width per input (the routed executor)


def measure_rows(models: Sequence[str], targets: Sequence[float], timing: Timing) -> list[SpeedRow]:
    rows = []
    for name in models:
        for target in targets:
            model, method, shape = random_gated_model(name, target, gate=timing.gate, width_scope=timing.width_scope)
            rows += rows_for(GatedCase(name, target, model, method, shape), timing)
    return rows


def rows_for(case: GatedCase, timing: Timing) -> list[SpeedRow]:
    """One row per runtime and batch size: dense (BN folded) against every deploy executor and the hard-pruned
    twin, interleaved. The MAC ratio comes from the gated model on the CPU; the rest runs on ``timing.device``."""
    out = []
    built = Executors.build(case, timing.device)
    for runtime in timing.runtimes:
        if runtime != "eager" and built.fixed_k is None and built.routed is None:
            print(f"{case.name} at {case.target}: no {runtime} row ({built.fixed_k_problem})")
            continue
        for batch in timing.batch_sizes:
            # routed at batch 1: each image runs one of a few static models; time them over images, one at a time
            one_by_one = batch == 1 and built.routed is not None
            x = case.inputs(ROUTED_B1_IMAGES if one_by_one else batch)
            ratio = mean_macs_ratio(case.model, case.method, x)
            x = x.to(timing.device)
            executors, candidates = built.timed(runtime, x, timing.threads, one_by_one)
            executors = {k: image_by_image(f) for k, f in executors.items()} if one_by_one else executors
            timed, rounds = interleaved_timing(executors, x, timing.threads, timing.min_run_time)
            t = {name: v.ms / (len(x) if one_by_one else 1) for name, v in timed.items()}  # per batch of 1
            chosen = min(candidates, key=t.get)  # what autotune does, on the interleaved timings
            if chosen != "fixedk":
                built.deploy.tuned[batch] = chosen
            built.deploy.strategy = "auto"
            theoretical, measured = 1.0 / ratio, round_ratio(rounds, "dense", chosen)
            hard_realization = round_ratio(rounds, "dense", "hard") * built.hard[1]
            out.append(
                SpeedRow(
                    case.name,
                    case.target,
                    batch,
                    ratio,
                    t["dense"],
                    t.get("masked"),
                    t[chosen],
                    chosen,
                    theoretical,
                    measured,
                    measured / theoretical,
                    max(timed["dense"].spread, timed[chosen].spread),
                    timed["dense"].stable and timed[chosen].stable,
                    runtime,
                    t.get("hard"),
                    hard_realization,
                )
            )
            print_progress(out[-1])
    return out


def trained_case(path: str, batch: int) -> GatedCase:
    """A trained gated checkpoint, with ``batch`` real test images of its data set."""
    model, method, ckpt = gated_model_from_checkpoint(path)
    cfg, arch = ckpt["config"], ckpt["arch"]
    shape = (arch["in_channels"], arch["image_size"], arch["image_size"])
    data = data_of_checkpoint(ckpt)
    images, _ = next(iter(BatchLoader(data.test, data, batch, train=False)))
    return GatedCase(f"{arch['model']}*", cfg["target_macs"], model, method, shape, images)  # * = trained gates


def checkpoint_rows(path: str, timing: Timing) -> list[SpeedRow]:
    """Rows for any dynprune checkpoint: gated runs in deploy mode, static runs as trained (hard-pruned:
    physically narrower) against their dense architecture, both BN folded, on real test images."""
    if is_gated_checkpoint(path):
        return rows_for(trained_case(path, max(timing.batch_sizes)), timing)
    return static_rows(path, timing)


def static_rows(path: str, timing: Timing) -> list[SpeedRow]:
    """A statically pruned checkpoint in the same rows: deploy = the pruned model, no masked column."""
    model, dense, _, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
    cfg = ckpt.get("config") or {}
    by_target = cfg.get("ratio") is None and cfg.get("ratios") is None  # else --target-macs was not used
    target = cfg.get("target_macs", ratio) if by_target else ratio
    data = data_of_checkpoint(ckpt)
    images, _ = next(iter(BatchLoader(data.test, data, max(timing.batch_sizes), train=False)))
    pruned, dense = fold_bn(model).to(timing.device), fold_bn(dense).to(timing.device)
    name = f"{ckpt['arch']['model']}/{ckpt.get('method')}"
    rows = []
    for batch in timing.batch_sizes:
        x = images[:batch].to(timing.device)
        timed, rounds = interleaved_timing({"dense": dense, "pruned": pruned}, x, timing.threads, timing.min_run_time)
        t = {name: v.ms for name, v in timed.items()}
        measured = round_ratio(rounds, "dense", "pruned")
        rows.append(
            SpeedRow(
                name,
                target,
                batch,
                ratio,
                t["dense"],
                None,
                t["pruned"],
                "static",
                1.0 / ratio,
                measured,
                measured * ratio,
                max(v.spread for v in timed.values()),
                all(v.stable for v in timed.values()),
            )
        )
        print_progress(rows[-1])
    return rows


def breakdown_rows(
    models: Sequence[str], targets: Sequence[float], checkpoints: Sequence[str], timing: Timing
) -> list[BreakdownRow]:
    """Batch-1 time split (gates, gathers, narrow convolutions) for the random-gate models and checkpoints."""
    cases = []
    for name in models:
        for target in targets:
            model, method, shape = random_gated_model(name, target)
            cases.append(GatedCase(name, target, model, method, shape))
    cases += [trained_case(path, 1) for path in checkpoints if is_gated_checkpoint(path)]  # static: no gates
    rows = []
    for case in cases:
        if case.model.gate_set.router is not None:  # one static model per input: no gates or gathers to split
            print(f"{case.name}: no breakdown (network-scope width gates run as the routed executor)")
            continue
        x = case.inputs(1)
        ratio = mean_macs_ratio(case.model, case.method, x)
        dense = fold_bn(without_gates(case.model)).to(timing.device)
        deploy = to_deploy(case.model).to(timing.device)
        row = breakdown_row(
            case.name, case.target, ratio, dense, deploy, x.to(timing.device), timing.threads, timing.min_run_time
        )
        rows.append(row)
    return rows


@dataclass
class DynamicBenchConfig:
    """python -m dynprune.bench dynamic: which gated models and checkpoints to time, and how."""

    models: list[str] = option(
        ["resnet20", "resnet56", "mobilenetv2", "resnet18"], "comma list of zoo models with random gates ('' for none)"
    )
    targets: list[float] = option([0.3, 0.5, 0.7], "comma list of MAC targets of the random gates, each in (0, 1]")
    batch_sizes: list[int] = option([1, 64], "comma list of batch sizes timed")
    threads: int = option(2, "torch CPU threads")
    min_run_time: float = option(1.0, "seconds of timing per measurement")
    json: str | None = option(None, "write the rows to this JSON file")
    checkpoint: list[str] = option(
        [],
        "also time these runs on real test images (comma list, or the flag repeated): gated runs in deploy mode, "
        "statically pruned ones as trained (hard-pruned = physically narrower) against their dense architecture",
        repeatable=True,
    )
    breakdown: bool = option(False, "also split batch-1 deploy time into gates, weight gathers and narrow convolutions")
    device: str = option("cpu", "cpu (default) or cuda[:N]: where dense and deploy run")
    runtime: list[str] = option(
        ["eager"],
        f"comma list of {', '.join(RUNTIMES.names())}: each row times dense and deploy in the same runtime "
        "(compiled and onnxruntime need static shapes: fixed-k gates, or width gates at --width-scope network)",
    )
    gate: str = option("topk", "estimator of the random gates (topk: fixed k per site, every executor)")
    width_scope: Literal["site", "network"] = option(
        "site", "--gate width: site | network (one width per input for the network: the routed executor)"
    )

    def validate(self) -> None:
        self.models = [m for m in self.models if m]  # --models '': trained checkpoints only
        if not self.models and not self.checkpoint:
            raise ConfigError("--models '' and no --checkpoint: nothing to time; name a model or a checkpoint")
        self.runtime = [r for r in self.runtime if r]
        unknown_runtimes = sorted(set(self.runtime) - set(RUNTIMES.names()))
        if unknown_runtimes or not self.runtime:
            raise ConfigError(f"unknown --runtime {unknown_runtimes}; allowed: {', '.join(RUNTIMES.names())}")
        if self.width_scope != "site" and self.gate != "width":
            raise ConfigError(f"--width-scope {self.width_scope} is for --gate width (got --gate {self.gate})")
        if self.gate not in ESTIMATORS:
            raise ConfigError(f"unknown --gate {self.gate!r}; allowed: {', '.join(ESTIMATORS.names())}")
        unknown = sorted(set(self.models) - set(list_models()))
        if unknown:
            raise ConfigError(f"unknown models {unknown}; known: {', '.join(list_models())}")
        if any(not 0 < t <= 1 for t in self.targets):
            raise ConfigError(f"--targets must be in (0, 1], got {self.targets}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes must be integers >= 1, got {self.batch_sizes}")
        check_positive(self, "threads", "min_run_time")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"unknown --device {self.device!r}; allowed: cpu, cuda, cuda:N")


def cli(argv: Sequence[str]) -> int:
    """Latency of dense (BN folded), masked and deploy execution of gated models at MAC targets."""
    args = parse_cli(DynamicBenchConfig, argv, "python -m dynprune.bench dynamic", cli.__doc__)
    models, targets, batches, runtimes = args.models, args.targets, args.batch_sizes, args.runtime
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} asked but this machine has no CUDA device; use --device cpu")
    if args.json:
        check_output_file(args.json, "--json")  # before the timing, not after it
    for path in args.checkpoint:  # a file that is not a run's checkpoint is refused before minutes of timing
        load_checkpoint(path)
    torch.set_num_threads(args.threads)
    timing = Timing(batches, args.threads, args.min_run_time, args.device, runtimes, args.gate, args.width_scope)
    rows = measure_rows(models, targets, timing)
    for path in args.checkpoint:
        rows += checkpoint_rows(path, timing)
    print(f"threads={args.threads}  device={args.device}  (ms per batch, median; MACs = mean per-sample / dense)")
    print(format_table(rows))
    split = []
    if args.breakdown:
        split = breakdown_rows(models, targets, args.checkpoint, timing)
    if split:
        print(format_breakdown(split))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows_as_dicts(rows), fh, indent=2)
        if split:
            breakdown_path = Path(args.json).with_name(Path(args.json).stem + "_breakdown.json")
            with open(breakdown_path, "w") as fh:
                json.dump(rows_as_dicts(split), fh, indent=2)
    return 0
