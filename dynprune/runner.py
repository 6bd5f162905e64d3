"""One training run from a TrainConfig to a run folder with result.json (the format the harness compares)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .api import build_method, load_run
from .base import ConfigError
from .catalog import option_groups
from .checkpoints import CHECKPOINT, CheckpointError, load_checkpoint, read_result, write_json
from .config import TrainConfig, load_yaml, save_yaml, to_dict
from .data import DataSplits, full_or_sample, load_dataset, subset
from .distill import Distiller
from .distributed import (
    DistContext,
    check_sync_bn,
    device_for_rank,
    init_distributed,
    max_weight_difference,
    shutdown,
)
from .engine import FINAL_RESULT, FitState, RunFolder, Trainer, check_resumable
from .evaluation import evaluate
from .init_weights import load_init
from .loader import BatchLoader
from .methods import Method
from .models import input_shape, model_for_arch
from .optim import OptimSettings
from .runlock import locked_run_folder
from .timing import measure_latency
from .track import Tracker

RESULT = "result.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use auto or cpu")
    return device


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) as ``cfg`` says, evaluate once on the test set, write and return the result."""
    out_dir = cfg.run_dir
    if cfg.resume and (finished := read_result(out_dir / RESULT)) is not None:  # a finished run changes nothing
        print(f"{out_dir} is finished (its {RESULT} is kept; nothing to resume)", flush=True)
        return finished
    if (out_dir / CHECKPOINT).exists() and not cfg.resume:
        raise ConfigError(f"--out {out_dir} already holds a run; pass --resume to continue it or choose another --out")
    for flag, path in (("--init", cfg.init), ("--distill", cfg.distill)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such checkpoint file")
    if cfg.resume and not (out_dir / CHECKPOINT).exists():
        raise ConfigError(f"--resume: no {CHECKPOINT} in {out_dir} to resume from")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_sync_bn(cfg.sync_bn, device)
    ctx = init_distributed(device)  # a no-op outside torchrun
    if cfg.batch_size % ctx.world_size:
        shutdown()
        raise ConfigError(f"--batch-size {cfg.batch_size} must be divisible by the {ctx.world_size} torchrun processes")
    try:
        with locked_run_folder(out_dir) if ctx.is_main else contextlib.nullcontext():
            return _run(cfg, device_for_rank(device), ctx)
    finally:
        shutdown()


@dataclass
class RunParts:
    """What one run is made of once its data, model and method are set up."""

    data: DataSplits
    model: torch.nn.Module
    method: Method
    arch: dict[str, Any]
    device: torch.device
    channels_last: bool
    amp_dtype: torch.dtype | None

    def loader(self, arrays: Any, batch_size: int, **kwargs: Any) -> BatchLoader:
        return BatchLoader(
            arrays, self.data, batch_size, device=self.device, channels_last=self.channels_last, **kwargs
        )


def _setup(cfg: TrainConfig, device: torch.device, ctx: DistContext) -> RunParts:
    """Data, model (from --init if given), the method's changes to it, device and memory format."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    data = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        cfg.val_size,
        download=cfg.download,
        image_size=cfg.image_size,
        image_memory_gb=cfg.image_memory_gb,
    )
    arch = {
        "model": cfg.model,
        "width": cfg.width,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
    }
    model = model_for_arch(arch)
    if cfg.init and (cut := load_init(model, cfg.init, arch)) and ctx.is_main:  # before gates or masks
        print(cut, flush=True)
    if cfg.sync_bn and ctx.enabled:  # before the method hooks its masks onto the BN modules
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    method = build_method(cfg)
    model = method.prepare(model, input_shape(arch))
    channels_last = cfg.channels_last and device.type == "cpu"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    amp_dtype = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    return RunParts(data, model, method, arch, device, channels_last, amp_dtype)


def data_set(cfg: TrainConfig, speak: bool = True) -> str:
    """The data set a run trains on: the one the user chose (a flag or the --config preset, or any value of a
    config built from values) or the resumed run recorded, else the default where its files are found or
    downloaded, else the sample shipped in the package, said in one line on stderr where ``speak``: so that the
    README's main command runs on a fresh machine without network."""
    if cfg.given is None or "dataset" in cfg.given:
        return cfg.dataset  # chosen: loaded as chosen, and missing files are an error (no fallback not asked for)
    recorded = cfg.run_dir / "config.yaml"
    if cfg.resume and recorded.is_file():  # --resume without --out: continue on the data the run started with
        return load_yaml(TrainConfig, recorded, option_groups()).get("dataset", cfg.dataset)
    dataset, notice = full_or_sample(cfg.dataset, cfg.data_dir, cfg.download)
    if notice is not None and speak:
        print(f"note: {notice}", file=sys.stderr, flush=True)
    return dataset


def _run(cfg: TrainConfig, device: torch.device, ctx: DistContext) -> dict[str, Any]:
    out_dir = cfg.run_dir
    # every rank reads it (they share the folder), so no rank waits in training for one that is done
    if cfg.resume and (finished := _finished_result(out_dir / CHECKPOINT, cfg, write=ctx.is_main)) is not None:
        return finished
    # The data set really used, so that config.yaml and result.json name it (never the full set for a sample run);
    # decided here, after the checks that need no data, so that a bad flag is one line without a data notice.
    cfg = dataclasses.replace(cfg, dataset=data_set(cfg, speak=ctx.is_main))
    parts = _setup(cfg, device, ctx)
    train_set = subset(parts.data.train, cfg.train_subset)
    train_loader = parts.loader(train_set, cfg.batch_size, train=True, seed=cfg.seed, shard=(ctx.rank, ctx.world_size))
    if len(train_loader) == 0:  # checked before anything of the run folder is written
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is more than the {len(train_set)} training images"
            f"{f' split over {ctx.world_size} processes' if ctx.enabled else ''}; lower --batch-size"
        )
    val_loader = parts.loader(parts.data.val, cfg.eval_batch_size, train=False)
    if cfg.resume:  # refuse a mismatched resume before anything of the run folder is rewritten
        check_resumable(out_dir / CHECKPOINT, parts.arch, parts.method.name, to_dict(cfg))
    if ctx.is_main:  # only rank 0 writes the run folder and talks to wandb
        save_yaml(cfg, out_dir / "config.yaml")
    mode = cfg.wandb if ctx.is_main else "disabled"
    tracker = Tracker(mode, cfg.wandb_project, out_dir, to_dict(cfg), group=cfg.wandb_group)
    try:
        folder = RunFolder(out_dir, parts.arch, to_dict(cfg), tracker)
        trainer = Trainer(
            parts.model,
            parts.method,
            train_loader,
            val_loader,
            OptimSettings.from_config(cfg),
            folder,
            amp_dtype=parts.amp_dtype,
            progress=cfg.progress,
            distiller=_distiller(cfg, parts),
        )
        if cfg.resume:
            trainer.resume()
            if ctx.is_main:
                print(f"resumed {out_dir} after epoch {trainer.state.epoch}/{cfg.epochs}", flush=True)
        state = trainer.fit()
        weight_diff = max_weight_difference(parts.model)  # 0.0 when DDP kept every rank's weights equal
        if not ctx.is_main:  # rank 0 alone finishes: calibration, test, latency, result.json
            return {"rank": ctx.rank, "max_weight_diff": weight_diff}
        result = _finish(cfg, parts, trainer, state, val_loader, tracker, weight_diff)
    finally:
        tracker.finish()
    return result


def _finish(
    cfg: TrainConfig,
    parts: RunParts,
    trainer: Trainer,
    state: FitState,
    val_loader: BatchLoader,
    tracker: Tracker,
    weight_diff: float,
) -> dict[str, Any]:
    """The end of a run on rank 0, in memory until one write: calibration or channel removal, the test pass,
    latency and plots; then the finalized model and its result in one checkpoint. Stopped before that write, the
    checkpoint on disk is the last epoch's and a rerun redoes this end; after it, a rerun writes result.json."""
    ctx, out_dir = trainer.dist, cfg.run_dir
    parts.method.finalize(parts.model, val_loader, parts.amp_dtype)  # may calibrate gates or remove channels
    result, per_sample_ratio = _final_result(cfg, parts, state, val_loader)
    if ctx.enabled:
        result["distributed"] = {
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "sync_bn": cfg.sync_bn,
            "max_weight_diff": weight_diff,
        }
    report_distribution(result, per_sample_ratio, out_dir, tracker)
    for name, path in parts.method.figures(out_dir, _title(result)).items():
        tracker.image(f"final/{name}", path)
    trainer.save(sync=False, final_result=result)  # rank 0 alone gets here
    write_json(out_dir / RESULT, result)
    tracker.summary(summary_values(result))
    return result


def _finished_result(path: Path, cfg: TrainConfig, write: bool = True) -> dict[str, Any] | None:
    """A run stopped after its final checkpoint but before result.json: the result saved with the model,
    written now where ``write`` (None: the checkpoint is of an unfinished run)."""
    ckpt = load_checkpoint(path)
    if FINAL_RESULT not in ckpt:
        return None
    if ckpt.get("method") != cfg.method_name:
        raise CheckpointError(f"{path}: a {ckpt.get('method')} run cannot be resumed as {cfg.method_name}")
    if not write:
        return ckpt[FINAL_RESULT]
    write_json(cfg.run_dir / RESULT, ckpt[FINAL_RESULT])
    print(f"{cfg.run_dir}: finished before its {RESULT} was written; written now from its final checkpoint", flush=True)
    return ckpt[FINAL_RESULT]


def _distiller(cfg: TrainConfig, parts: RunParts) -> Distiller | None:
    """The --distill teacher, rebuilt as its own run trained it (a gated teacher keeps its gates)."""
    if cfg.distill is None:
        return None
    teacher, _, ckpt = load_run(cfg.distill)
    if ckpt["arch"]["num_classes"] != parts.arch["num_classes"]:
        raise ConfigError(
            f"--distill {cfg.distill}: a teacher of {ckpt['arch']['num_classes']} classes for a "
            f"{parts.arch['num_classes']}-class data set"
        )
    memory_format = torch.channels_last if parts.channels_last else torch.contiguous_format
    return Distiller(teacher, cfg.distill_temperature, cfg.distill_weight).to(parts.device, memory_format)


def _final_result(
    cfg: TrainConfig, parts: RunParts, state: FitState, val_loader: BatchLoader
) -> tuple[dict[str, Any], torch.Tensor]:
    """(everything result.json records about the run, per-sample MACs / dense) from the one test evaluation."""
    model, method = parts.model, parts.method
    test_set = subset(parts.data.test, cfg.test_subset)
    test_loader = parts.loader(test_set, cfg.eval_batch_size, train=False)
    test = evaluate(model, test_loader, method, parts.amp_dtype)
    macs = test.macs.double()
    dense_macs = method.dense_macs
    latency = None
    if cfg.latency:
        latency = latency_on_test_images(method.deploy_model(model), test_loader, parts.device, parts.channels_last)
    result = {
        "method": method.name,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "top1": test.top1,
        "test_loss": test.loss,
        "test_images": len(test.labels),
        "val_top1": state.history[-1]["val_acc"] if state.history else None,
        "macs": macs.mean().item(),
        "macs_dense": dense_macs,
        "macs_ratio": macs.mean().item() / dense_macs,
        "macs_p50": macs.quantile(0.5).item(),
        "macs_p99": macs.quantile(0.99).item(),
        "macs_std": macs.std(unbiased=False).item(),
        "macs_per_class": per_class_mean(macs, test.labels),
        "macs_unit": "multiply-accumulates per sample (FLOPs = 2 x MACs)",
        "params": sum(p.numel() for p in model.parameters()),
        "latency_ms": latency,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "train_seconds": state.train_seconds,
        "images_per_s": state.history[-1]["images_per_s"] if state.history else None,
        "device": str(parts.device),
        "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **method.result_fields(),
        **method.inspect(model, val_loader, test_loader, parts.arch["num_classes"], parts.amp_dtype),
    }
    return result, macs / dense_macs


def latency_on_test_images(
    model: torch.nn.Module,
    test_loader: BatchLoader,
    device: torch.device,
    channels_last: bool,
    min_run_time: float = 0.3,
) -> dict:
    """Batch 1 and 64 on real test images (gates decide per input, so random tensors would mislead);
    ``min_run_time``: seconds of timing per round."""
    images = next(iter(test_loader))[0]
    inputs = {b: images[:b] for b in (1, 64)}
    # a deploy executor with several strategies (gated runs) times them on these images first and runs the
    # fastest per batch size: the latency a user deploying this run would get on this machine
    tune = getattr(model, "autotune", None)
    chosen = {f"b{b}": tune(x) for b, x in inputs.items()} if callable(tune) else {}
    ms = measure_latency(
        model, images.shape[1:], (1, 64), channels_last=channels_last, inputs=inputs, min_run_time=min_run_time
    )
    extra = {"strategies": chosen} if chosen else {}
    return {**ms, **extra, "device": str(device), "threads": torch.get_num_threads(), "deployed": type(model).__name__}


def per_class_mean(values: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Mean of ``values`` per class label (index = class)."""
    n = int(labels.max().item()) + 1
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, labels, values.double())
    counts = torch.bincount(labels, minlength=n).clamp(min=1)
    return (sums / counts).tolist()


def summary_values(result: dict[str, Any]) -> dict[str, float]:
    """result.json's numbers for the wandb summary, nested ones included (``final/latency_ms/b1``,
    ``final/budget_calibration/logit_shift``); the calibrated test-time open rates as ``final/open/<site>``."""
    out: dict[str, float] = {}
    for key, value in result.items():
        prefix = "final/open" if key == "site_open_rates" else f"final/{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[prefix] = value
        elif isinstance(value, dict):
            out.update({f"{prefix}/{k}": v for k, v in value.items() if isinstance(v, int | float)})
    return out


def report_distribution(result: dict[str, Any], ratios: torch.Tensor, out_dir: Path, tracker: Tracker) -> None:
    """Per-sample MAC histogram and per-site open rates: a PNG in the run folder and wandb charts."""
    rates = result.get("site_open_rates")
    if rates is None:
        return
    from .plots import plot_gate_report

    plot_gate_report(
        rates,
        ratios,
        result.get("target_macs"),
        out_dir / "gates.png",
        title=_title(result),
    )
    tracker.image("final/gates", out_dir / "gates.png")
    tracker.histogram("final/macs_ratio_per_sample", ratios)
    tracker.table("final/macs_per_class", ["class", "mean_macs"], list(enumerate(result["macs_per_class"])))
    tracker.table("final/site_open_rate", ["site", "open_rate"], list(rates.items()))


def _title(result: dict[str, Any]) -> str:
    return f"{result['model']} / {result['dataset']} / {result['method']}"
