"""python -m dynprune.compare --config configs/compare/NAME.yaml: every method at matched budgets, one report."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..cli import run_command
from ..config import build, parse_cli, to_dict
from ..outputs import check_folder
from ..track import Tracker
from .config import CompareConfig
from .methods import COMPARE_METHODS

PROG = "python -m dynprune.compare"
# --quick: what CI runs end to end (tiny subset, one target, one seed; every registered method unless --methods).
QUICK = {
    "train_subset": 256,
    "val_size": 200,
    "epochs": 1,
    "dense_epochs": 1,
    "targets": [0.5],
    "seeds": [0],
    "search_episodes": 2,
    "search_val_subset": 100,
    "latency_seconds": 0.05,
}


def _summary_run(cfg: CompareConfig, rows: list) -> None:
    tracker = Tracker(
        cfg.wandb, cfg.wandb_project, cfg.run_dir, to_dict(cfg), name=f"{cfg.name}-summary", group=cfg.name
    )
    if tracker.enabled:
        import wandb

        columns = list(rows[0]) if rows else []
        table = wandb.Table(columns=columns, data=[list(r.values()) for r in rows])
        tracker.log({"results": table})
        tracker.log({"pareto": wandb.plot.scatter(table, "macs_ratio", "top1", title=f"{cfg.name}: top-1 vs MACs")})
    tracker.finish()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list" in argv:
        for name, m in COMPARE_METHODS.items():
            print(f"{name:<22}{m.family:<9}{m.description}")
        return 0
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    cfg = parse_cli(CompareConfig, argv, PROG, __doc__ + " Add --quick for a tiny end-to-end run, --list for methods.")
    if quick:
        every = {} if any(a.startswith("--methods") for a in argv) else {"methods": COMPARE_METHODS.names()}
        cfg = build(CompareConfig, {**to_dict(cfg), **QUICK, **every})
    from .execute import retime_cells, run_cells
    from .plan import build_plan, format_plan
    from .report import collect_rows, write_outputs

    def work() -> int:
        check_folder(cfg.run_dir)  # before the plan: a dry run creates nothing but must not list folders in a file
        cells = build_plan(cfg)
        print(format_plan(cells, cfg.workers), flush=True)
        if cfg.dry_run:
            return 0
        run_cells(cells, cfg.workers)
        if cfg.latency:  # parallel cells and cascades (serial training cells timed themselves)
            retime_cells([c for c in cells if not c.external], cfg.cell_threads, cfg.latency_seconds)
        rows = collect_rows(cells)
        report = write_outputs(cfg.run_dir, f"{cfg.model} on {cfg.dataset}", rows, cfg.targets)
        _summary_run(cfg, rows)
        print(report)
        print(f"-> {cfg.run_dir}/report.md, results.csv, pareto.png, latency.png")
        return 0

    return run_command(PROG, work, "finished cells are kept, run the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
