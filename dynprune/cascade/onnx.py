"""A cascade in ONNX Runtime: one file per member (any batch size; the inputs that go on are any part of a batch),
run with the same exit rule as the PyTorch ``Cascade`` (``model.route``), the threshold kept beside the files."""

from __future__ import annotations

from pathlib import Path

import torch

from ..runtimes import OrtExecutor, export_onnx
from .model import Cascade, route


def member_files(path: Path, count: int) -> list[Path]:
    """``path`` for the first member, ``<stem>.member<i>.onnx`` beside it for the others."""
    return [path, *(path.with_name(f"{path.stem}.member{i}.onnx") for i in range(1, count))]


def export_cascade(cascade: Cascade, example: torch.Tensor, path: Path) -> list[Path]:
    """Every member exported for any batch size; returns the files, cheapest member first."""
    files = member_files(path, len(cascade.members))
    for member, file in zip(cascade.members, files, strict=True):
        export_onnx(member, example, file, dynamic_batch=True)
    return files


class OrtCascade:
    """The exported members run by ONNX Runtime as ``Cascade`` runs them in PyTorch."""

    def __init__(self, files: list[Path], threshold: float, threads: int) -> None:
        self.members = [OrtExecutor(f, threads) for f in files]
        self.threshold = threshold

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return route(self.members, self.threshold, x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.route(x)[0]
