"""Latency of dense (BN folded), masked and deploy execution of gated models, as rows for a table/JSON.

Gates for speed measurements may be random: the time depends on which channels are open, not on accuracy.
Random gates get per-sample decisions (random weights) and a bias shift found by bisection so that the mean
per-sample MACs on random inputs match the target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..cost import interleaved_latency
from ..fold import fold_bn
from ..models import create_model
from .breakdown import BreakdownRow, breakdown_row
from .calibrate import bisect_logit_shift
from .deploy import to_deploy
from .method import GatedMethod

#: (input shape, classes) each zoo model is benchmarked at
BENCH_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet18": ((3, 224, 224), 1000),
    "mobilenetv2": ((3, 32, 32), 10),
}
DEFAULT_SHAPE = ((3, 32, 32), 10)


@dataclass
class SpeedRow:
    model: str
    target: float
    batch: int
    macs_ratio: float  # measured mean per-sample MACs / dense, gate MACs included
    dense_ms: float
    masked_ms: float | None  # None for static checkpoints (no gates to mask with)
    deploy_ms: float
    strategy: str  # what deploy mode chose for this batch size; "static" for a statically pruned checkpoint
    theoretical_speedup: float
    measured_speedup: float
    realization: float


def mean_macs_ratio(model: nn.Module, method: GatedMethod, x: torch.Tensor) -> float:
    """Mean per-sample MACs / dense MACs of the gated (training-form, eval-mode) model's decisions on ``x``."""
    with torch.no_grad():
        model(x)
    return method.cost.macs_from_masks(model.gate_set.masks).mean().item() / method.dense_macs


def random_gated_model(name: str, target: float, seed: int = 0) -> tuple[nn.Module, GatedMethod, tuple[int, ...]]:
    shape, classes = BENCH_SHAPES.get(name, DEFAULT_SHAPE)
    torch.manual_seed(seed)
    model = create_model(name, shape[0], classes, shape[-1])
    method = GatedMethod("ste", min(target, 1.0), calibrate=False)
    model = method.prepare(model, shape).eval()
    for gate in model.gate_set.gates.values():
        nn.init.normal_(gate.fc2.weight, std=0.5)
        nn.init.normal_(gate.fc2.bias, std=0.5)
    x = torch.randn(32, *shape)

    def ratio_at(shift: float) -> float:
        model.gate_set.logit_shift = shift
        return mean_macs_ratio(model, method, x)

    bisect_logit_shift(ratio_at, target, tolerance=0.01)
    model.gate_set.fold_logit_shift()
    return model, method, shape


def measure_rows(
    models: Sequence[str],
    targets: Sequence[float],
    batch_sizes: Sequence[int],
    threads: int,
    min_run_time: float,
    device: str = "cpu",
) -> list[SpeedRow]:
    rows = []
    for name in models:
        for target in targets:
            model, method, shape = random_gated_model(name, target)
            dense = fold_bn(_without_gates(model))
            deploy = to_deploy(model)
            rows += rows_for(
                name, target, model, method, dense, deploy, shape, batch_sizes, threads, min_run_time, device=device
            )
    return rows


def _with_strategy(deploy: nn.Module, strategy: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deploy model run with one fixed strategy (for timing the strategies side by side)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        deploy.strategy = strategy
        return deploy(x)

    return run


def rows_for(
    name,
    target,
    model,
    method,
    dense,
    deploy,
    shape,
    batch_sizes,
    threads,
    min_run_time,
    images=None,
    device: str = "cpu",
) -> list[SpeedRow]:
    """One row per batch size; ``images`` (real, normalised) replace random inputs when given. The MAC ratio
    comes from the gated model on the CPU; dense and deploy run on ``device``."""
    out = []
    dense, deploy = dense.to(device), deploy.to(device)
    for batch in batch_sizes:
        x = images[:batch] if images is not None else torch.randn(batch, *shape)
        ratio = mean_macs_ratio(model, method, x)
        candidates = deploy.candidates(batch)
        executors = {"dense": dense, **{s: _with_strategy(deploy, s) for s in candidates}}
        t = interleaved_latency(executors, x.to(device), threads, min_run_time)
        chosen = min(candidates, key=t.get)  # what autotune does, on the interleaved timings
        deploy.tuned[batch] = chosen
        deploy.strategy = "auto"
        t_dense, t_masked, t_deploy = t["dense"], t["masked"], t[chosen]
        theoretical = 1.0 / ratio
        measured = t_dense / t_deploy
        out.append(
            SpeedRow(
                name,
                target,
                batch,
                ratio,
                t_dense,
                t_masked,
                t_deploy,
                chosen,
                theoretical,
                measured,
                measured / theoretical,
            )
        )
    return out


def _trained(path: str, batch: int):
    """(model, method, name, target, shape, real test images) of a trained gated checkpoint."""
    from ..data import BatchLoader
    from ..rebuild import data_of_checkpoint, gated_model_from_checkpoint

    model, method, ckpt = gated_model_from_checkpoint(path)
    cfg, arch = ckpt["config"], ckpt["arch"]
    shape = (arch["in_channels"], arch["image_size"], arch["image_size"])
    data = data_of_checkpoint(ckpt)
    images, _ = next(iter(BatchLoader(data.test, data, batch, train=False)))
    return model, method, f"{arch['model']}*", cfg["target_macs"], shape, images  # * = trained gates


def trained_rows(
    path: str, batch_sizes: Sequence[int], threads: int, min_run_time: float, device: str = "cpu"
) -> list[SpeedRow]:
    """Rows for a trained gated checkpoint, timed on real test images of its data set."""
    model, method, name, target, shape, images = _trained(path, max(batch_sizes))
    dense = fold_bn(_without_gates(model))
    return rows_for(
        name,
        target,
        model,
        method,
        dense,
        to_deploy(model),
        shape,
        batch_sizes,
        threads,
        min_run_time,
        images=images,
        device=device,
    )


def checkpoint_rows(
    path: str, batch_sizes: Sequence[int], threads: int, min_run_time: float, device: str = "cpu"
) -> list[SpeedRow]:
    """Rows for any dynprune checkpoint: gated runs in deploy mode (``trained_rows``), static runs as trained
    (hard-pruned: physically narrower) against their dense architecture, both BN folded, on real test images."""
    from ..rebuild import is_gated_checkpoint

    if is_gated_checkpoint(path):
        return trained_rows(path, batch_sizes, threads, min_run_time, device)
    return static_rows(path, batch_sizes, threads, min_run_time, device)


def static_rows(
    path: str, batch_sizes: Sequence[int], threads: int, min_run_time: float, device: str = "cpu"
) -> list[SpeedRow]:
    """A statically pruned checkpoint in the same rows: deploy = the pruned model, no masked column."""
    from ..data import BatchLoader
    from ..rebuild import data_of_checkpoint, pruned_and_dense_from_checkpoint

    model, dense, _, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
    cfg = ckpt.get("config") or {}
    by_target = cfg.get("ratio") is None and cfg.get("ratios") is None  # else --target-macs was not used
    target = cfg.get("target_macs", ratio) if by_target else ratio
    data = data_of_checkpoint(ckpt)
    images, _ = next(iter(BatchLoader(data.test, data, max(batch_sizes), train=False)))
    pruned, dense = fold_bn(model).to(device), fold_bn(dense).to(device)
    name = f"{ckpt['arch']['model']}/{ckpt.get('method')}"
    rows = []
    for batch in batch_sizes:
        t = interleaved_latency({"dense": dense, "pruned": pruned}, images[:batch].to(device), threads, min_run_time)
        measured = t["dense"] / t["pruned"]
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
            )
        )
    return rows


def breakdown_rows(
    models: Sequence[str],
    targets: Sequence[float],
    checkpoints: Sequence[str],
    threads: int,
    min_run_time: float,
    device: str = "cpu",
) -> list[BreakdownRow]:
    """Batch-1 time split (gates, gathers, narrow convolutions) for the random-gate models and checkpoints."""
    from ..rebuild import is_gated_checkpoint

    cases = []
    for name in models:
        for target in targets:
            model, method, shape = random_gated_model(name, target)
            cases.append((name, target, model, method, torch.randn(1, *shape)))
    for path in filter(is_gated_checkpoint, checkpoints):  # static runs have no gates to break down
        model, method, name, target, _, images = _trained(path, 1)
        cases.append((name, target, model, method, images[:1]))
    rows = []
    for name, target, model, method, x in cases:
        ratio = mean_macs_ratio(model, method, x)
        dense, deploy = fold_bn(_without_gates(model)).to(device), to_deploy(model).to(device)
        rows.append(breakdown_row(name, target, ratio, dense, deploy, x.to(device), threads, min_run_time))
    return rows


def _without_gates(model: nn.Module) -> nn.Module:
    import copy

    plain = copy.deepcopy(model)
    plain.gate_set.remove()
    del plain.gate_set
    return plain


def format_table(rows: Sequence[SpeedRow]) -> str:
    width = max([12] + [len(r.model) + 1 for r in rows])
    head = (
        f"{'model':<{width}}{'target':>7}{'batch':>6}{'MACs':>7}{'dense ms':>10}{'masked ms':>11}{'deploy ms':>11}"
        f"{'strategy':>9}{'theory':>8}{'measured':>9}{'realiz.':>8}"
    )
    lines = [head, "-" * len(head)]
    slower = 0
    for r in rows:
        # every exact executor evaluates the gates, so none can fall back to the dense model's time: say so
        flag = "  SLOWER than dense" if r.measured_speedup < 1 else ""
        masked = "-" if r.masked_ms is None else f"{r.masked_ms:.3f}"
        slower += bool(flag)
        lines.append(
            f"{r.model:<{width}}{r.target:>7.2f}{r.batch:>6d}{r.macs_ratio:>7.3f}{r.dense_ms:>10.3f}{masked:>11}"
            f"{r.deploy_ms:>11.3f}{r.strategy:>9}{r.theoretical_speedup:>8.2f}{r.measured_speedup:>9.2f}"
            f"{r.realization:>8.2f}{flag}"
        )
    if slower:
        lines.append(
            f"{slower} row(s) slower than dense: the fastest exact strategy still pays for the gates; run these "
            "with the dense model or a larger batch (see --breakdown)"
        )
    return "\n".join(lines)


def rows_as_dicts(rows: Sequence[SpeedRow]) -> list[dict]:
    return [asdict(r) for r in rows]
