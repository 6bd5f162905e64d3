"""Strategy scores persisted across runs: one JSON line per evaluation, keyed by (checkpoint hash, evaluation
settings, kept channel counts per site). A repeated strategy costs nothing and a stopped search resumes.

Only the search's main process appends (environments in worker processes send new scores through ``info``), so
the file needs no locking; a line cut short by a crash, or one without a usable score (hand-edited, foreign), is
skipped on reading: that strategy is evaluated again when the search meets it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def _score(line: str) -> tuple[str, float] | None:
    """(key, validation top-1) of a cache line, or None where the line holds no such pair."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("key"), str):
        return None
    score = row.get("val_acc")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return None
    return row["key"], float(score)


class EvaluationCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.scores: dict[str, float] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                entry = _score(line)
                if entry is not None:
                    self.scores[entry[0]] = entry[1]

    def __len__(self) -> int:
        return len(self.scores)

    def add(self, key: str, val_acc: float) -> None:
        if key in self.scores:
            return
        self.scores[key] = val_acc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"key": key, "val_acc": val_acc}) + "\n")
