"""Per-episode bookkeeping of one search algorithm: history, best strategy, cache writes, progress and wandb."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dynprune.track import Tracker

from .cache import EvaluationCache


class EpisodeRecorder:
    def __init__(
        self,
        name: str,
        limit: int,
        cache: EvaluationCache,
        tracker: Tracker,
        log_path: Path,
        progress: bool = True,
    ) -> None:
        self.name, self.limit, self.cache, self.tracker = name, limit, cache, tracker
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.log_path = log_path
        log_path.write_text("")  # a resumed search replays its episodes (from the cache), so the log restarts
        self.progress = progress and sys.stderr.isatty()
        self.bar: tqdm | None = None

    @property
    def done(self) -> bool:
        return len(self.history) >= self.limit

    def record(self, info: dict[str, Any]) -> None:
        if "evaluation" in info:
            self.cache.add(*info["evaluation"])
        row = {k: v for k, v in info.items() if k not in ("evaluation", "terminal_observation", "TimeLimit.truncated")}
        row["episode"] = len(self.history) + 1
        if self.best is None or row["reward"] > self.best["reward"]:
            self.best = row
        row["best_reward"] = self.best["reward"]
        self.history.append(row)
        with self.log_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.tracker.log(
            {
                "episode": row["episode"],
                f"{self.name}/reward": row["reward"],
                f"{self.name}/best_reward": row["best_reward"],
                f"{self.name}/val_acc": row["val_acc"],
                f"{self.name}/macs_ratio": row["macs_ratio"],
                f"{self.name}/cached": float(row["cached"]),
            }
        )
        self._tick(row)

    def _tick(self, row: dict[str, Any]) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.limit, desc=f"search {self.name}", disable=not self.progress, leave=False)
        self.bar.update()
        self.bar.set_postfix(best=f"{self.best['val_acc']:.1f}%", macs=f"{row['macs_ratio']:.3f}")
        if self.done:
            self.bar.close()
