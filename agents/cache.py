"""Strategy scores persisted across runs: one JSON line per evaluation, keyed by (checkpoint hash, evaluation
settings, kept channel counts per site). A repeated strategy costs nothing and a stopped search resumes.

Only the search's main process appends (environments in worker processes send new scores through ``info``), so
the file needs no locking; a line cut short by a crash is skipped on reading.
"""

from __future__ import annotations

import json
from pathlib import Path


class EvaluationCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.scores: dict[str, float] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.scores[row["key"]] = float(row["val_acc"])

    def __len__(self) -> int:
        return len(self.scores)

    def add(self, key: str, val_acc: float) -> None:
        if key in self.scores:
            return
        self.scores[key] = val_acc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"key": key, "val_acc": val_acc}) + "\n")
