"""Run the plan's cells in order; a cell with a result.json is skipped, so a stopped comparison resumes."""

from __future__ import annotations

import subprocess
import sys
import time

from ..config import ConfigError, TrainConfig, build
from ..runner import run_training
from .plan import Cell


def _search(cell: Cell) -> None:
    """rl: the agent's search runs as ``python -m agents.search`` (dynprune never imports agents)."""
    out = cell.run_dir / "search"
    if (out / "policy.json").is_file():
        return
    args = list(cell.search_args) + (["--resume"] if (out / "cache.jsonl").is_file() else [])
    proc = subprocess.run([sys.executable, "-m", "agents.search", *args], capture_output=True, text=True)
    (cell.run_dir).mkdir(parents=True, exist_ok=True)
    (cell.run_dir / "search.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"{cell.label}: the policy search failed ({last}); see {cell.run_dir}/search.log")


def run_cells(cells: list[Cell]) -> None:
    todo = [c for c in cells if not c.done and not c.external]
    for i, cell in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {cell.label} -> {cell.run_dir}", flush=True)
        started = time.perf_counter()
        if cell.search_args:
            _search(cell)
        values = dict(cell.values)
        values["resume"] = (cell.run_dir / "checkpoint.pt").is_file()  # an interrupted cell continues
        result = run_training(build(TrainConfig, values))
        print(
            f"    top1 {result['top1']:.2f}%  MACs {result['macs_ratio']:.3f}x  ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
