"""python -m dynprune.prune {list,sensitivity}: static-pruning tools outside a training run."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..base import ConfigError, check_non_negative, option
from ..config import parse_cli

PROG = "python -m dynprune.prune"
COMMANDS = {
    "list": "list the pruning methods",
    "sensitivity": "val accuracy of each site pruned alone, without fine-tuning",
}


@dataclass
class SensitivityConfig:
    """python -m dynprune.prune sensitivity: the checkpoint, the method and the ratios each site is pruned at."""

    init: str | None = option(None, "trained dense checkpoint (e.g. runs/dense/checkpoint.pt); required")
    method: str = option("l1-filter", "a structured method (l1-filter, l2-filter, ...)")
    ratios: list[float] = option([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "comma list of ratios, each in (0, 1)")
    val_subset: int = option(2000, "validation images used (0 = all)")
    data_dir: str | None = option(None, "where the run's data set is, if not where it was")
    out: str = option("runs/sensitivity", "folder for sensitivity.png and sensitivity.json")
    wandb: Literal["offline", "online", "disabled"] = option("offline", "wandb mode; offline needs no account")

    def validate(self) -> None:
        from .pruners import PRUNERS

        if self.init is None:
            raise ConfigError("--init is required: the trained dense checkpoint (e.g. runs/dense/checkpoint.pt)")
        if not self.ratios or any(not 0 < r < 1 for r in self.ratios):
            raise ConfigError(f"--ratios must lie in (0, 1), got {self.ratios}")
        if self.method not in PRUNERS or not PRUNERS[self.method].structured:
            known = ", ".join(n for n, p in PRUNERS.items() if p.structured)
            raise ConfigError(f"--method {self.method!r} is not a per-site method; choose one of: {known}")
        check_non_negative(self, "val_subset")


def _usage() -> str:
    commands = "\n".join(f"  {name:<14}{text}" for name, text in COMMANDS.items())
    return f"usage: {PROG} {{{','.join(COMMANDS)}}} ...\n\n{__doc__.splitlines()[0]}\n\ncommands:\n{commands}\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_usage(), end="")
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"{PROG}: error: choose a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        if rest[:1] in (["-h"], ["--help"]):
            print(f"usage: {PROG} list\n\n{COMMANDS['list']}")
            return 0
        if rest:
            print(f"{PROG} list: error: unrecognized arguments: {' '.join(rest)}", file=sys.stderr)
            return 2
        from .pruners import PRUNERS

        for name, p in PRUNERS.items():
            print(f"{name:<22}{'structured' if p.structured else 'unstructured':<14}{p.description}")
        return 0
    args = parse_cli(SensitivityConfig, rest, f"{PROG} sensitivity", COMMANDS["sensitivity"])
    return _sensitivity(args, args.ratios)


def _sensitivity(args: SensitivityConfig, ratios: list[float]) -> int:
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
