"""One evaluation pass: loss, top-1 and the per-sample MACs the method reports for each input."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .loader import BatchLoader
from .methods import Method


@dataclass
class EvalResult:
    loss: float
    top1: float  # percent
    macs: torch.Tensor  # per-sample MACs [N], float64
    labels: torch.Tensor  # [N]


def evaluate(
    model: nn.Module, loader: BatchLoader | Iterable[tuple[torch.Tensor, torch.Tensor]], method: Method,
    amp_dtype: torch.dtype | None,
) -> EvalResult:  # fmt: skip
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    macs, labels = [], []
    method.start_eval()
    # any iterable of (images, labels) batches; a BatchLoader says its device (for mixed precision)
    with torch.no_grad(), autocast_for(getattr(loader, "device", torch.device("cpu")), amp_dtype):
        for x, y in loader:
            logits = model(x)
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
            macs.append(method.per_sample_macs(model, len(y)).detach().cpu())
            labels.append(y.cpu())
    model.train(was_training)
    if not labels:
        raise ValueError("evaluation set is empty")
    return EvalResult(total_loss / n, 100.0 * correct / n, torch.cat(macs), torch.cat(labels))


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
