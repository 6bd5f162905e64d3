"""python -m dynprune.bench ddp: training images/s of N torchrun processes against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base import ConfigError, check_non_negative, check_positive, option
from ..config import parse_cli
from ..data import DATASET_NAMES
from ..models import list_models
from ..outputs import check_output_file


@dataclass
class DdpBenchConfig:
    """python -m dynprune.bench ddp: the process counts and the training each one runs."""

    procs: list[int] = option([1, 2], "comma list of process counts to time (1 = a plain single process)")
    model: str = option("resnet20", "zoo model (or package.module:callable)")
    dataset: str = option("fashion-mnist", "data set")
    train_subset: int = option(5000, "training images (0 = all)")
    batch_size: int = option(128, "global batch (split over the processes)")
    epochs: int = option(2, "the last epoch is timed (the first warms up)")
    threads: int = option(0, "threads per process (0 = cores / processes)")
    device: str = option("cpu", "cpu | cuda | cuda:N")
    json: str | None = option(None, "write the rows to this JSON file")

    def validate(self) -> None:
        if not self.procs or min(self.procs) < 1:
            raise ConfigError(f"--procs must be integers >= 1, got {self.procs}")
        if ":" not in self.model and self.model not in list_models():  # package.module:callable: checked when built
            raise ConfigError(
                f"--model got {self.model!r}; known: {', '.join(list_models())}, or package.module:callable"
            )
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(f"--dataset got {self.dataset!r}; known: {', '.join(DATASET_NAMES)}")
        check_positive(self, "batch_size", "epochs")
        uneven = [n for n in self.procs if self.batch_size % n]
        if uneven:  # each process takes an equal slice of every global batch
            raise ConfigError(
                f"--batch-size {self.batch_size} must be divisible by every --procs value; not by {uneven}"
            )
        check_non_negative(self, "train_subset", "threads")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"--device got {self.device!r}; allowed: cpu, cuda, cuda:N")


def failure_reason(stderr: str) -> str:
    """The training's own error line (a rank's ``error:`` line comes before torchrun's long summary, which a
    tail would show instead), else the last lines."""
    for line in stderr.splitlines():
        if "dynprune.train: error:" in line:
            return line.split("dynprune.train: error:", 1)[1].strip()
    return "\n" + stderr[-2000:]


def cli(argv: Sequence[str]) -> int:
    """Training images/s of N torchrun processes (DDP) against one process, on the same global batches."""
    args = parse_cli(DdpBenchConfig, argv, "python -m dynprune.bench ddp", cli.__doc__)
    if args.json:
        check_output_file(args.json, "--json")  # before the trainings, not after them

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            threads = args.threads or max(1, cores // n)
            out = Path(tmp) / f"p{n}"
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 else []
            cmd = [sys.executable, *launcher, "-m", "dynprune.train", "--model", args.model]
            cmd += ["--dataset", args.dataset, "--train-subset", str(args.train_subset), "--val-size", "500"]
            cmd += ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--device", args.device]
            cmd += ["--threads", str(threads), "--wandb", "disabled", "--no-latency", "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{n} processes failed: {failure_reason(proc.stderr)}", file=sys.stderr)
                return 1
            last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            rows.append({"procs": n, "threads_per_proc": threads, "images_per_s": last["images_per_s"]})
    base = rows[0]["images_per_s"]
    print(f"{'procs':>6}{'threads/proc':>14}{'images/s':>10}{'vs first':>10}")
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
        print(f"{r['procs']:>6}{r['threads_per_proc']:>14}{r['images_per_s']:>10.0f}{r['speedup']:>9.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
