"""The training spine every method runs through: the loop, validation after each epoch, atomic checkpoints,
resume (what it reports: ``train_callbacks.py``; one evaluation pass: ``evaluation.py``).

A checkpoint holds everything needed to continue bit-for-bit (model, optimizer, schedule, data-order and
global RNG states), plus the architecture it belongs to, so a checkpoint of another model is refused with a
clear message. Checkpoints are data, never code: they are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .base import ConfigError
from .checkpoints import CHECKPOINT, CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import check_same_run
from .distill import Distiller
from .evaluation import autocast_for, evaluate
from .loader import BatchLoader
from .methods import Method
from .optim import OptimSettings, make_optimizer, make_schedule
from .train_callbacks import StepReport, TrainCallback, default_callbacks


def check_resumable(
    path: Path, arch: dict[str, Any], method: str, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint of ``path`` if a run of ``arch`` with ``method`` (and, given, the flat ``config``) may
    continue from it, else one clear error. The checkpoint's own config is the run's: config.yaml may be gone
    or edited."""
    ckpt = load_checkpoint(path, arch)
    if ckpt.get("method") != method:
        raise CheckpointError(f"{path}: a {ckpt.get('method')} run cannot be resumed as {method}")
    if config is not None and isinstance(ckpt.get("config"), dict):
        check_same_run(ckpt["config"], config, str(path.parent))
    return ckpt


#: the checkpoint entry of a finished run: its result.json, saved with the finalized model it describes
FINAL_RESULT = "final_result"


class TrainingDiverged(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------- trainer
@dataclass
class FitState:
    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass
class RunFolder:
    """Where a run writes (checkpoint, metrics.jsonl) and what its checkpoints record about it."""

    out_dir: Path
    arch: dict[str, Any]
    config: dict[str, Any]
    tracker: Any  # track.Tracker


class Trainer:
    """Runs ``epochs`` of SGD on ``train_loader``, validating on ``val_loader`` after each epoch."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        train_loader: BatchLoader,
        val_loader: BatchLoader,
        optim: OptimSettings,
        folder: RunFolder,
        amp_dtype: torch.dtype | None = None,
        progress: bool = True,
        distiller: Distiller | None = None,
    ) -> None:
        self.model = model  # the plain model: evaluation, checkpoints and the method's hooks all live on it
        self.dist = distributed.current()
        # Under torchrun the forward/backward of training goes through DDP (gradient all-reduce); built after the
        # method has attached its gates and masks, whose parameters must exist when DDP registers them.
        self.net: nn.Module = model
        if self.dist.enabled:
            device = train_loader.device
            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.method = method
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.epochs = optim.epochs
        self.out_dir, self.arch, self.config, self.tracker = folder.out_dir, folder.arch, folder.config, folder.tracker
        self.amp_dtype = amp_dtype
        self.distiller = distiller  # --distill: the task loss is mixed with a KL to the teacher's soft labels
        self.criterion = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.optimizer = make_optimizer(model, optim.lr, optim.momentum, optim.weight_decay, method.param_groups())
        steps_per_epoch = len(train_loader)
        if steps_per_epoch == 0:
            raise ConfigError("the training set is smaller than one batch; lower --batch-size")
        total = self.epochs * steps_per_epoch
        self.scheduler = make_schedule(
            self.optimizer, optim.schedule, total, int(optim.warmup_epochs * steps_per_epoch)
        )
        self.state = FitState()
        method.begin(total, steps_per_epoch)
        # what the run reports (rank 0 alone): metrics.jsonl, progress, a line per epoch, wandb
        reporting = default_callbacks(self.out_dir, self.tracker, self.epochs, steps_per_epoch, progress)
        self.callbacks: list[TrainCallback] = reporting if self.dist.is_main else []

    # -- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def save(self, sync: bool = True, final_result: dict[str, Any] | None = None) -> None:
        """Rank 0 writes (atomically); with ``sync`` the other ranks wait until the file is complete.
        ``final_result``: the finished run's result.json, saved with the model it describes (the end of a run is
        then one write: a rerun that finds it writes result.json and is done)."""
        if self.dist.is_main:
            self._write_checkpoint({} if final_result is None else {FINAL_RESULT: final_result})
        if sync:
            distributed.barrier()

    def _write_checkpoint(self, extra: dict[str, Any]) -> None:
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loader": self.train_loader.state_dict(),
                "rng": torch.get_rng_state(),
                "epoch": self.state.epoch,
                "step": self.state.step,
                "train_seconds": self.state.train_seconds,
                "history": self.state.history,
                "arch": self.arch,
                "method": self.method.name,
                "world_size": self.dist.world_size,
                **self.method.checkpoint_extra(),
                "config": self.config,
                **extra,
            },
        )

    def resume(self) -> None:
        ckpt = check_resumable(self.checkpoint_path, self.arch, self.method.name)
        saved = ckpt.get("world_size", self.dist.world_size)  # checkpoints from before it was recorded: any
        # Each rank's BN statistics (without --sync-bn) and result.json's one recorded process count depend on it
        # (the data order does not: every rank draws the same global batches).
        if saved != self.dist.world_size:
            launch = f"torchrun --nproc_per_node {saved} -m dynprune.train" if saved > 1 else "python -m dynprune.train"
            raise CheckpointError(
                f"{self.checkpoint_path}: trained with {saved} process(es), resumed with {self.dist.world_size}; "
                f"resume it with the same count: {launch} --resume --out {self.out_dir}"
            )
        load_weights(self.model, ckpt["model"], str(self.checkpoint_path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.train_loader.load_state_dict(ckpt["loader"])
        torch.set_rng_state(ckpt["rng"])
        self.state = FitState(ckpt["epoch"], ckpt["step"], list(ckpt["history"]), ckpt["train_seconds"])
        if self.state.step > 0:  # what the method schedules per step (a temperature, gate noise) as it was then
            self.method.before_step(self.model, self.state.step - 1)

    # -- loop
    def fit(self) -> FitState:
        for callback in self.callbacks:
            callback.on_fit_start(self.state.epoch)
        try:
            while self.state.epoch < self.epochs:
                started = time.perf_counter()
                train_stats = self._train_epoch(self.state.epoch)
                self.state.train_seconds += time.perf_counter() - started
                self.state.epoch += 1
                row = self._end_of_epoch(train_stats, time.perf_counter() - started)
                for callback in self.callbacks:
                    callback.on_epoch_end(row, self.state.step)
                self.save()  # only after a whole epoch: an interrupted epoch is simply redone on resume
        finally:
            for callback in self.callbacks:
                callback.on_fit_end()
        return self.state

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        model, device = self.net, self.train_loader.device
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for callback in self.callbacks:
            callback.on_epoch_start(epoch, len(self.train_loader))
        started = time.perf_counter()
        for i, (x, y) in enumerate(self.train_loader):
            loss, logits, extra_logs = self._step(x, y, epoch, i)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if self.callbacks:
                report = StepReport(
                    epoch, i, self.state.step, loss.detach(), seen, correct, time.perf_counter() - started,
                    self.scheduler.get_last_lr()[0], extra_logs,
                )  # fmt: skip
                for callback in self.callbacks:
                    callback.on_step(report)
        elapsed = time.perf_counter() - started
        # Under torchrun: statistics of the global batch (every rank's slice), throughput of all ranks together.
        seen_all = distributed.sum_across_ranks(float(seen), device)
        return {
            "loss": distributed.sum_across_ranks(loss_sum.item(), device) / seen_all,
            "acc": 100.0 * distributed.sum_across_ranks(float(correct.item()), device) / seen_all,
            "images_per_s": seen_all / elapsed,
        }

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, i: int
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """One optimisation step: (loss, logits, the method's scalars to log)."""
        model, device = self.net, self.train_loader.device
        self.method.before_step(model, self.state.step)
        with autocast_for(device, self.amp_dtype):
            logits = model(x)
            loss = self.criterion(logits.float(), y)
            if self.distiller is not None:
                loss = self.distiller.loss(loss, logits, x)
            extra, extra_logs = self.method.extra_loss(model, logits, self.state.step, epoch, inputs=x, labels=y)
            if extra is not None:
                loss = loss + extra
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; {self._kept()} (try a lower --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return loss, logits, extra_logs

    def _kept(self) -> str:
        """What a diverged run leaves: the last good checkpoint, or none."""
        if self.checkpoint_path.is_file():
            return f"the last good checkpoint is {self.checkpoint_path}"
        return "no checkpoint was written yet (it diverged in its first epoch)"

    def _end_of_epoch(self, train: dict[str, float], seconds: float) -> dict[str, float]:
        val = evaluate(self.model, self.val_loader, self.method, self.amp_dtype)
        if not math.isfinite(val.loss):  # weights blown up without a non-finite training loss (yet)
            raise TrainingDiverged(
                f"validation loss became {val.loss} after epoch {self.state.epoch}; {self._kept()} (try a lower --lr)"
            )
        cost = self.method.on_epoch_end(self.model, self.state.epoch)
        dense = float(self.method.dense_macs)  # the reference every ratio is taken against (result.json's too)
        macs = val.macs.mean().item() if len(val.macs) else dense
        row = {
            "epoch": self.state.epoch,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "val_loss": val.loss,
            "val_acc": val.top1,
            "val_macs_ratio": macs / dense,
            "images_per_s": train["images_per_s"],
            "epoch_seconds": seconds,
            "lr": self.scheduler.get_last_lr()[0],
            **{f"cost/{k}": v for k, v in cost.items()},  # the method's own per-epoch figures (gates: open rates)
        }
        self.state.history.append(row)
        return row
