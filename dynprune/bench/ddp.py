"""python -m dynprune.bench ddp: training images/s of N torchrun processes against one process."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..outputs import check_output_file


def cli(argv: Sequence[str]) -> int:
    """Training images/s of N torchrun processes (DDP) against one process, on the same global batches."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench ddp")
    parser.add_argument("--procs", default="1,2", help="process counts to time (1 = a plain single process)")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (split over the processes)")
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    parser.add_argument("--threads", type=int, default=0, help="threads per process (0 = cores / processes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.json:
        check_output_file(args.json, "--json")  # before the trainings, not after them

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(p) for p in args.procs.split(",")):
            threads = args.threads or max(1, cores // n)
            out = Path(tmp) / f"p{n}"
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 else []
            cmd = [sys.executable, *launcher, "-m", "dynprune.train", "--model", args.model]
            cmd += ["--dataset", args.dataset, "--train-subset", str(args.train_subset), "--val-size", "500"]
            cmd += ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--device", args.device]
            cmd += ["--threads", str(threads), "--wandb", "disabled", "--no-latency", "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{n} processes failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
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
