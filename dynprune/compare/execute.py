"""Run the plan's cells; a cell with a result.json is skipped, so a stopped comparison resumes.

With ``workers > 1`` independent cells run in parallel processes (spawned, each with its own torch thread count
from the plan, so N workers x T threads never oversubscribe the cores). A cell that fine-tunes waits for the dense
cells, whose checkpoint it starts from. A worker's cell writes its log to ``<cell>/train.log``; only one
line per finished cell reaches the terminal, so parallel logs never interleave.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from ..orphans import die_with_parent
from .cell import Cell
from .methods import cell_method

CELL_LOG = "train.log"


def run_cell(cell: Cell) -> dict[str, Any]:
    """One cell, start to result: the rl search if any, then its method's run (a training run, resumed if
    interrupted; a cascade: its members' runs, then the calibration)."""
    method = cell_method(cell)
    method.before_training(cell)  # e.g. rl's policy search
    return method.run(cell)


def _run_cell_logged(cell: Cell) -> tuple[dict[str, Any], float]:
    """A worker process's entry: the cell with its output in the cell's own log file."""
    # Ctrl-C reaches the workers too (same process group): stop the cell cleanly, its last epoch kept. A worker
    # started from a background shell would otherwise inherit SIGINT ignored and keep training.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.perf_counter()
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(cell.run_dir / CELL_LOG, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = run_cell(cell)
    return result, time.perf_counter() - started


def _finished_line(result: dict[str, Any], seconds: float) -> str:
    # MACs in millions: a compact model's own macs_ratio is against itself (report.md divides by the dense model)
    return f"top1 {result['top1']:.2f}%  MACs {result['macs'] / 1e6:.2f}M  ({seconds:.0f}s)"


def _run_serial(cells: list[Cell], total: int) -> None:
    for i, cell in enumerate(cells, 1):
        print(f"[{i}/{total}] {cell.label} -> {cell.run_dir}", flush=True)
        started = time.perf_counter()
        result = run_cell(cell)
        print(f"    {_finished_line(result, time.perf_counter() - started)}", flush=True)


def _run_parallel(cells: list[Cell], workers: int, total: int) -> None:
    """Cells that start from (or distil from) the dense checkpoint are submitted once every dense cell has
    finished; the others (dense, compact architectures from scratch) start at once."""
    print(f"running {len(cells)} cells in {workers} worker processes (logs: <cell>/{CELL_LOG})", flush=True)
    waiting = [c for c in cells if c.needs_dense and not cell_method(c).is_reference]
    dense_left = sum(cell_method(c).is_reference for c in cells)
    # spawn, not fork: a forked child would inherit the parent's torch thread pool and OpenMP state
    # each worker dies with this process (kill -9 included): no idle workers left holding memory
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=die_with_parent) as pool:
        futures: dict[Future, Cell] = {}

        def submit(batch: list[Cell]) -> None:
            futures.update({pool.submit(_run_cell_logged, cell): cell for cell in batch})

        submit([c for c in cells if c not in waiting])
        if not dense_left:
            submit(waiting)
            waiting = []
        pending, done_count = set(futures), 0
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = futures[future]
                    result, seconds = future.result()  # a failed cell raises here; the rest are cancelled
                    done_count += 1
                    print(f"[{done_count}/{total}] {cell.label}: {_finished_line(result, seconds)}", flush=True)
                    dense_left -= cell_method(cell).is_reference
                if waiting and not dense_left:
                    before = set(futures)
                    submit(waiting)
                    pending |= set(futures) - before
                    waiting = []
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def retime_cells(cells: list[Cell], threads: int, seconds: float = 0.3) -> None:
    """Latency of every finished cell that has none, one cell at a time on an otherwise idle machine.

    Parallel cells skip their own latency: measured while another cell trains on the other cores it was noise
    (a first run showed a narrow model at 0.35x of dense); a cascade cell is timed here too, after its members
    trained. Each cell is rebuilt as it would be deployed (``CompareMethod.deployable``: gated: deploy mode;
    hard-pruned: narrower; a cascade from its cascade.json) and timed on real test images, as a serial cell is."""
    import json

    import torch

    from ..checkpoints import read_result, write_json
    from ..data import data_of_checkpoint
    from ..loader import BatchLoader
    from ..runner import RESULT, latency_on_test_images, resolve_device

    todo = [c for c in cells if (read_result(c.run_dir / RESULT) or {}).get("latency_ms") is None]
    if not todo:
        return
    if threads:
        torch.set_num_threads(threads)
    print(f"latency pass: timing {len(todo)} cells one at a time", flush=True)
    data_cache: dict[tuple, Any] = {}
    for cell in todo:
        model, ckpt = cell_method(cell).deployable(cell)
        cfg = ckpt["config"]
        key = (cfg.get("dataset"), cfg.get("data_dir"), cfg.get("val_size"), cfg.get("image_size"))
        data = data_cache.get(key) or data_cache.setdefault(key, data_of_checkpoint(ckpt))
        device = resolve_device(cfg.get("device", "auto"))
        channels_last = bool(cfg.get("channels_last", True)) and device.type == "cpu"
        model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        loader = BatchLoader(
            data.test, data, cfg.get("eval_batch_size", 512), train=False, device=device, channels_last=channels_last
        )
        result_path = cell.run_dir / RESULT
        result = json.loads(result_path.read_text())
        latency = latency_on_test_images(model, loader, device, channels_last, seconds)
        result["latency_ms"] = {**latency, "pass": "serial"}
        write_json(result_path, result)
        print(f"    {cell.label}: b1 {result['latency_ms']['b1']:.2f} ms, b64 {result['latency_ms']['b64']:.1f} ms")


def run_cells(cells: list[Cell], workers: int = 1) -> None:
    todo = [c for c in cells if not c.done and not c.external]
    if workers > 1 and len(todo) > 1:
        _run_parallel(todo, workers, len(todo))
    else:
        _run_serial(todo, len(todo))
