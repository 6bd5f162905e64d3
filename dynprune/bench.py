"""python -m dynprune.bench NAME: measurement scripts that print a table (figures go to BENCHMARKS.md).

Benchmarks are registered by name; each parses its own flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .registry import Registry

Benchmark = Callable[[Sequence[str]], int]
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    return BENCHMARKS.register(name)


@register_benchmark("overhead")
def overhead(argv: Sequence[str]) -> int:
    """Time the dynprune Trainer against a bare PyTorch loop on the same model, data and batches."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench overhead")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gates", default="gumbel,ste", help="gate estimators to time too ('' for none)")
    args = parser.parse_args(argv)
    from .overhead import compare_loops

    gates = tuple(g for g in args.gates.split(",") if g)
    rows = compare_loops(args.model, args.dataset, args.batch_size, args.steps, args.repeats, args.threads, gates)
    print(f"{'loop':<12}{'median s/step':>15}{'images/s':>12}")
    for name, seconds in rows.items():
        print(f"{name:<12}{seconds:>15.4f}{args.batch_size / seconds:>12.0f}")
    print(f"overhead: dynprune / bare = {rows['dynprune'] / rows['bare']:.3f}")
    for gate in gates:
        print(f"gated step time: {gate} / dense = {rows[gate] / rows['dynprune']:.3f}")
    return 0


@register_benchmark("dynamic")
def dynamic(argv: Sequence[str]) -> int:
    """Latency of dense (BN folded), masked and deploy execution of gated models at MAC targets."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench dynamic")
    parser.add_argument("--models", default="resnet20,resnet56,mobilenetv2,resnet18")
    parser.add_argument("--targets", default="0.3,0.5,0.7")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="also time this run on real test images (repeatable): gated runs in deploy mode, statically "
        "pruned ones as trained (hard-pruned = physically narrower) against their dense architecture",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also split batch-1 deploy time into gates, weight gathers and narrow convolutions",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where dense and deploy run")
    args = parser.parse_args(argv)
    try:
        models = [m for m in args.models.split(",") if m]
        targets = [float(t) for t in args.targets.split(",")]
        batches = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError as exc:
        parser.error(f"bad list value ({exc})")
    from .models import list_models

    unknown = sorted(set(models) - set(list_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(list_models())}")
    if any(not 0 < t <= 1 for t in targets) or any(b < 1 for b in batches):
        parser.error("targets must be in (0, 1] and batch sizes >= 1")
    import json

    import torch

    from .gates.breakdown import format_breakdown
    from .gates.speed import breakdown_rows, checkpoint_rows, format_table, measure_rows, rows_as_dicts

    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"unknown --device {args.device!r}; allowed: cpu, cuda, cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked but this machine has no CUDA device; use --device cpu")
    torch.set_num_threads(args.threads)
    rows = measure_rows(models, targets, batches, args.threads, args.min_run_time, args.device)
    for path in args.checkpoint:
        rows += checkpoint_rows(path, batches, args.threads, args.min_run_time, args.device)
    print(f"threads={args.threads}  device={args.device}  (ms per batch, median; MACs = mean per-sample / dense)")
    print(format_table(rows))
    split = []
    if args.breakdown:
        split = breakdown_rows(models, targets, args.checkpoint, args.threads, args.min_run_time, args.device)
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


@register_benchmark("pruned")
def pruned(argv: Sequence[str]) -> int:
    """Latency of a (hard-)pruned checkpoint vs its dense architecture, BN folded in both."""
    parser = argparse.ArgumentParser(prog="python -m dynprune.bench pruned")
    parser.add_argument("checkpoints", nargs="+", help="checkpoint.pt files of pruned runs")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import json

    import torch

    from .cost import measure_latency
    from .engine import CheckpointError
    from .fold import fold_bn
    from .rebuild import pruned_and_dense_from_checkpoint

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for path in args.checkpoints:
        try:
            model, dense, shape, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
        except (CheckpointError, ValueError) as exc:
            parser.error(str(exc))
        t_pruned = measure_latency(fold_bn(model), shape, batches, args.threads, args.min_run_time)
        t_dense = measure_latency(fold_bn(dense), shape, batches, args.threads, args.min_run_time)
        for b in batches:
            speedup = t_dense[f"b{b}"] / t_pruned[f"b{b}"]
            rows.append(
                {
                    "checkpoint": path,
                    "method": ckpt.get("method"),
                    "batch": b,
                    "macs_ratio": ratio,
                    "dense_ms": t_dense[f"b{b}"],
                    "pruned_ms": t_pruned[f"b{b}"],
                    "measured_speedup": speedup,
                    "theoretical_speedup": 1 / ratio,
                    "realization": speedup * ratio,
                }
            )
    print(
        f"{'method':<16}{'batch':>6}{'MACs':>7}{'dense ms':>10}{'pruned ms':>11}"
        f"{'theory':>8}{'measured':>9}{'realiz.':>8}"
    )
    for r in rows:
        print(
            f"{r['method']!s:<16}{r['batch']:>6}{r['macs_ratio']:>7.3f}{r['dense_ms']:>10.3f}{r['pruned_ms']:>11.3f}"
            f"{r['theoretical_speedup']:>8.2f}{r['measured_speedup']:>9.2f}{r['realization']:>8.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


@register_benchmark("ddp")
def ddp(argv: Sequence[str]) -> int:
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
    import json
    import os
    import subprocess
    import tempfile

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        known = ", ".join(BENCHMARKS.names())
        print(f"python -m dynprune.bench: error: choose a benchmark: {known}", file=sys.stderr)
        return 2
    return BENCHMARKS.get(argv[0])(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
