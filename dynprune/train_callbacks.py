"""What the training loop reports, as callbacks (stable-baselines3's shape): the trainer runs the steps and the
validation; each callback turns them into one kind of output. Rank 0 alone gets the callbacks under torchrun."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm


@dataclass
class StepReport:
    """One finished optimisation step as the callbacks see it."""

    epoch: int  # 0-based
    index: int  # 0-based, within the epoch
    step: int  # global steps done
    loss: torch.Tensor  # detached scalar
    seen: int  # images of the epoch so far (this rank)
    correct: torch.Tensor  # correct predictions of the epoch so far (this rank)
    seconds: float  # since the epoch started
    lr: float
    extra: dict[str, float]  # the method's scalars (budget, guide, ...)


class TrainCallback:
    """Hooks of the loop; each does nothing unless overridden."""

    def on_fit_start(self, epoch: int) -> None:
        """Before the first epoch this fit runs (``epoch`` completed so far: a resumed run's)."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Before epoch ``epoch`` (0-based) of ``steps`` steps."""

    def on_step(self, report: StepReport) -> None:
        """After each optimisation step."""

    def on_epoch_end(self, row: dict[str, Any], step: int) -> None:
        """After an epoch's validation: its metrics.jsonl row (``epoch`` is 1-based there)."""

    def on_fit_end(self) -> None:
        """After the last epoch, or when the fit stops."""


class ProgressBar(TrainCallback):
    """A tqdm bar per epoch, for a terminal."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar: tqdm | None = None

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, dynamic_ncols=True)

    def on_step(self, report: StepReport) -> None:
        self.bar.update(1)
        if report.index % 20 == 0:
            rate = report.seen / max(report.seconds, 1e-9)
            accuracy = 100 * report.correct.item() / report.seen
            self.bar.set_postfix(loss=f"{report.loss.item():.3f}", acc=f"{accuracy:.1f}", img_s=f"{rate:.0f}")

    def on_epoch_end(self, row: dict[str, Any], step: int) -> None:
        self.on_fit_end()

    def on_fit_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressLines(TrainCallback):
    """Plain lines every tenth of an epoch, for output that is not a terminal (nohup, log files, CI):
    ``epoch 2/9  40% of 117 steps  612 img/s  ETA 5.1 min for the run`` (the ETA from this epoch's rate)."""

    def __init__(self, epochs: int, steps_per_epoch: int) -> None:
        self.epochs, self.per_epoch = epochs, steps_per_epoch
        self.marks = {max(1, round(steps_per_epoch * k / 10)) for k in range(1, 10)}

    def on_step(self, report: StepReport) -> None:
        done = report.index + 1
        if done not in self.marks:
            return
        per_step = report.seconds / done
        left = (self.per_epoch - done) + (self.epochs - report.epoch - 1) * self.per_epoch
        print(
            f"epoch {report.epoch + 1}/{self.epochs}  {100 * done / self.per_epoch:3.0f}% of {self.per_epoch} steps  "
            f"{report.seen / max(report.seconds, 1e-9):.0f} img/s  ETA {left * per_step / 60:.1f} min for the run",
            flush=True,
        )


class EpochLines(TrainCallback):
    """One line per epoch: train and validation loss and accuracy, MACs, throughput."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, row: dict[str, Any], step: int) -> None:
        print(
            f"epoch {row['epoch']:3d}/{self.epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}  MACs {row['val_macs_ratio']:.3f}x  "
            f"{row['images_per_s']:.0f} img/s  {row['epoch_seconds']:.1f}s",
            flush=True,
        )


class TrackerLogs(TrainCallback):
    """wandb (``track.Tracker``): the training loss every ``every`` steps, the epoch's figures after each epoch."""

    def __init__(self, tracker: Any, every: int = 50) -> None:
        self.tracker, self.every = tracker, every

    def on_step(self, report: StepReport) -> None:
        if not self.tracker.enabled or report.step % self.every:
            return
        logs = {"train/loss": report.loss.item(), "train/lr": report.lr}
        logs.update({f"train/{k}": v for k, v in report.extra.items()})
        self.tracker.log(logs, step=report.step)

    def on_epoch_end(self, row: dict[str, Any], step: int) -> None:
        logs = {
            "val/loss": row["val_loss"],
            "val/acc": row["val_acc"],
            "cost/macs_ratio": row["val_macs_ratio"],
            "epoch": row["epoch"],
            "train/epoch_loss": row["train_loss"],
            "train/epoch_acc": row["train_acc"],
            "train/images_per_s": row["images_per_s"],
        }
        logs.update({k: v for k, v in row.items() if k.startswith("cost/")})
        self.tracker.log(logs, step=step)


def epoch_of_row(line: str) -> int | None:
    """The epoch of one metrics.jsonl row; None for a row a stop cut short (or any line that is not a row)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("epoch") if isinstance(row, dict) and isinstance(row.get("epoch"), int) else None


class MetricsFile(TrainCallback):
    """metrics.jsonl: one row per epoch, flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: Any = None

    def on_fit_start(self, epoch: int) -> None:
        self._trim(epoch)
        self.file = open(self.path, "a")  # noqa: SIM115 (held open across the fit, closed in on_fit_end)

    def _trim(self, epoch: int) -> None:
        """Keep only the rows of epochs the checkpoint holds: a run stopped between writing an epoch's row and
        its checkpoint, or restarted without one, must not leave rows the resumed run writes again."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
        epochs = [epoch_of_row(line) for line in rows]
        kept = [line for line, e in zip(rows, epochs, strict=True) if e is not None and e <= epoch]
        if len(kept) != len(rows):
            self.path.write_text("".join(line + "\n" for line in kept))

    def on_epoch_end(self, row: dict[str, Any], step: int) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def on_fit_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def default_callbacks(
    out_dir: Path, tracker: Any, epochs: int, steps_per_epoch: int, progress: bool
) -> list[TrainCallback]:
    """What a run reports: metrics.jsonl, a bar on a terminal or lines elsewhere, a line per epoch, wandb."""
    shown: list[TrainCallback] = []
    if progress:  # output that is not a terminal (nohup, log files, CI) gets plain lines instead of a bar
        shown = [ProgressBar(epochs)] if sys.stderr.isatty() else [ProgressLines(epochs, steps_per_epoch)]
    return [MetricsFile(out_dir / "metrics.jsonl"), *shown, EpochLines(epochs), TrackerLogs(tracker)]
