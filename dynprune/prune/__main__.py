"""python -m dynprune.prune {list,sensitivity}: static-pruning tools outside a training run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "python -m dynprune.prune"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the pruning methods")
    sens = sub.add_parser("sensitivity", help="val accuracy of each site pruned alone, without fine-tuning")
    sens.add_argument("--init", required=True, help="trained dense checkpoint (e.g. runs/dense/checkpoint.pt)")
    sens.add_argument("--method", default="l1-filter", help="a structured method (l1-filter, l2-filter, ...)")
    sens.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    sens.add_argument("--val-subset", type=int, default=2000, help="validation images used (0 = all)")
    sens.add_argument("--data-dir", default=None)
    sens.add_argument("--out", default="runs/sensitivity")
    sens.add_argument("--wandb", default="offline", choices=("offline", "online", "disabled"))
    args = parser.parse_args(argv)

    from .pruners import PRUNERS

    if args.command == "list":
        for name, p in PRUNERS.items():
            print(f"{name:<22}{'structured' if p.structured else 'unstructured':<14}{p.description}")
        return 0
    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        parser.error(f"--ratios expects comma-separated numbers, got {args.ratios!r}")
    if any(not 0 < r < 1 for r in ratios):
        parser.error("--ratios must lie in (0, 1)")
    if args.method not in PRUNERS or not PRUNERS[args.method].structured:
        known = ", ".join(n for n, p in PRUNERS.items() if p.structured)
        parser.error(f"--method {args.method!r} is not a per-site method; choose one of: {known}")
    return _sensitivity(args, ratios)


def _sensitivity(args: argparse.Namespace, ratios: list[float]) -> int:
    from ..base import ConfigError
    from ..checkpoints import CheckpointError, load_checkpoint
    from ..data import DataError, data_of_checkpoint
    from ..models import model_for_arch
    from ..outputs import check_folder, prepare_folder
    from ..track import Tracker
    from .method import restore_pruned
    from .sensitivity import format_sensitivity, plot_sensitivity, site_sensitivity

    out = Path(args.out)
    try:
        check_folder(out)
        ckpt = load_checkpoint(args.init)
        arch = ckpt["arch"]
        model = restore_pruned(model_for_arch(arch), ckpt, args.init)
        data = data_of_checkpoint(ckpt, args.data_dir)
        prepare_folder(out)  # before the passes, so that a folder that cannot be written loses no work
    except (CheckpointError, DataError, ConfigError, KeyError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    dense_acc, table = site_sensitivity(model, args.method, data, ratios, args.val_subset)
    print(format_sensitivity(dense_acc, ratios, table))
    title = f"{arch['model']} / {data.name} / {args.method}: one site pruned at a time"
    plot_sensitivity(dense_acc, ratios, table, out / "sensitivity.png", title)
    (out / "sensitivity.json").write_text(
        json.dumps({"method": args.method, "ratios": ratios, "dense_val_top1": dense_acc, "val_top1": table}, indent=2)
    )
    tracker = Tracker(args.wandb, "dynprune", out, {"method": args.method, "init": args.init}, name=out.name)
    if tracker.enabled:
        import wandb

        tracker.log(
            {
                "sensitivity": wandb.plot.line_series(
                    xs=ratios, ys=list(table.values()), keys=list(table), title=title, xname="pruning ratio"
                )
            }
        )
    tracker.finish()
    print(f"-> {out}/sensitivity.png, {out}/sensitivity.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
