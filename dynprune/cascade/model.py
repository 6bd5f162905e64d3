"""A cascade of statically pruned models as one module, and the file that records it (``cascade.json``).

Each member is a plain narrower model (a hard- or mask-pruned dynprune run, BN folded), so every branch is a
static model that compiled runtimes and ONNX Runtime pre-pack: the per-input choice costs one softmax per stage
and one gather of the inputs that go on, never a per-sample weight gather.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import CheckpointError, file_hash, write_json
from ..fold import fold_bn
from ..rebuild import is_gated_checkpoint, pruned_and_dense_from_checkpoint
from .rule import confidence

SPEC = "cascade.json"


@dataclass(frozen=True)
class Member:
    checkpoint: str  # resolved path of the run's checkpoint.pt
    sha256: str  # file_hash of it when the cascade was calibrated
    macs_ratio: float  # the member's MACs over its dense model's


def route(
    members: Sequence[Callable[[torch.Tensor], torch.Tensor]], threshold: float, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, classes], the member each input stopped at [B]) of ``members`` (PyTorch modules or runtime
    sessions, cheapest first): each runs once, batched, on the inputs still undecided.

    Every input runs the first member as it is (no gather); an input that goes on to member i takes member i's
    answer, kept if it stops there or the member is the last. At batch 1 every small op counts against a
    member that takes a millisecond, so the inputs that stop are never copied."""
    out = members[0](x).to(x.device)
    stopped = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    logits, pending = out, None  # None: every input, no index needed
    for i in range(1, len(members)):
        go_on = confidence(logits) < threshold
        pending = go_on.nonzero().flatten() if pending is None else pending[go_on]
        if pending.numel() == 0:
            break
        logits = members[i](x.index_select(0, pending)).to(x.device)
        out[pending] = logits
        stopped[pending] = i
    return out, stopped


class Cascade(nn.Module):
    """Members in run order (cheapest first); an input stops at the first member whose confidence reaches
    ``threshold``, the last member answers the rest."""

    def __init__(self, members: Sequence[nn.Module], threshold: float) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.threshold = float(threshold)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, classes], the member each input stopped at [B])."""
        return route(list(self.members), self.threshold, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.route(x)[0]


def load_member(path: str | Path, folded: bool = True) -> tuple[nn.Module, float, dict]:
    """(the member's deploy model, BN folded unless ``folded`` is False; its MACs over its dense model's; its
    checkpoint). Unfolded: as every other run's latency and parameters are measured."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if is_gated_checkpoint(path):
        raise CheckpointError(f"{path}: a gated run; a cascade's members are dense or statically pruned runs")
    model, _, _, ratio, ckpt = pruned_and_dense_from_checkpoint(path)
    return (fold_bn(model) if folded else model).eval(), ratio, ckpt


def save_spec(out_dir: Path, members: Sequence[Member], threshold: float, target: float) -> Path:
    """cascade.json; each member's path relative to it, so a folder moved with its members still loads."""
    path = out_dir / SPEC
    entries = [{**asdict(m), "checkpoint": os.path.relpath(m.checkpoint, out_dir.resolve())} for m in members]
    write_json(path, {"members": entries, "threshold": threshold, "target_macs": target})
    return path


def load_cascade(path: str | Path, folded: bool = True) -> tuple[Cascade, dict[str, Any]]:
    """(the cascade a ``cascade.json`` describes, the spec with each member's checkpoint path resolved: the file
    holds it relative to its own folder); a member changed since calibration is refused. ``folded``: as
    ``load_member``."""
    try:
        spec = json.loads(Path(path).read_text())
        entries = [(m["checkpoint"], m["sha256"]) for m in spec["members"]]
        threshold = float(spec["threshold"])
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a cascade.json of python -m dynprune.cascade ({exc!r})") from None
    models, resolved = [], []
    for written, sha256 in entries:
        checkpoint = Path(path).parent / written  # an absolute path stays itself
        if not checkpoint.is_file():
            raise CheckpointError(f"{path}: its member {checkpoint} is not there (moved or deleted?)")
        model, _, _ = load_member(checkpoint, folded)
        resolved.append(str(checkpoint.resolve()))
        if file_hash(checkpoint) != sha256:
            raise CheckpointError(f"{checkpoint} changed since {path} was calibrated: calibrate again")
        models.append(model)
    members = [{**m, "checkpoint": c} for m, c in zip(spec["members"], resolved, strict=True)]
    return Cascade(models, threshold).eval(), {**spec, "members": members}
