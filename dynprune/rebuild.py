"""A run's model from its checkpoint alone, in the forms the tools need (all through the public API's ``load_run``).

Other tools' pruned checkpoints fail with ``load_state_dict`` size mismatches because the narrower shapes are
not saved; dynprune's checkpoints carry the kept channel indices (``site_keep``), so the shapes are rebuilt
before loading, and a gated run gets its gates back from its saved config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .api import load_run
from .checkpoints import load_checkpoint
from .cost import CostModel
from .gates.method import GatedMethod
from .models import input_shape, model_for_arch
from .prune.masks import make_permanent


def is_gated_checkpoint(path: str | Path) -> bool:
    """Whether the checkpoint is of a ``--gate`` run."""
    return (load_checkpoint(path).get("config") or {}).get("gate", "none") != "none"


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(plain model with the checkpoint's weights, checkpoint) of a dense or statically pruned run; masks, if
    any, are re-attached as prune masks."""
    model, method, ckpt = load_run(path)
    if isinstance(method, GatedMethod):
        raise ValueError(f"{path}: a gated checkpoint; use gated_model_from_checkpoint")
    return model, ckpt


def gated_model_from_checkpoint(path: str | Path) -> tuple[nn.Module, GatedMethod, dict]:
    """(gated model in eval mode, its GatedMethod, checkpoint) of a ``--gate`` run."""
    model, method, ckpt = load_run(path)
    if not isinstance(method, GatedMethod):
        raise ValueError(f"{path}: not a gated run (gate = none)")
    return model, method, ckpt


def deployable_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(the model a run's latency is measured on, checkpoint): what its method deploys (gated: closed channels
    skipped; hard-pruned: narrower; masked: with their masks)."""
    model, method, ckpt = load_run(path)
    return method.deploy_model(model).eval(), ckpt


def pruned_and_dense_from_checkpoint(
    path: str | Path,
) -> tuple[nn.Module, nn.Module, tuple[int, int, int], float, dict]:
    """(the statically pruned model, masks made permanent; a fresh model of its dense architecture; input shape;
    structured MACs pruned / dense; checkpoint) for timing a static run against its dense baseline."""
    model, ckpt = model_from_checkpoint(path)
    make_permanent(model)
    arch = ckpt["arch"]
    shape = input_shape(arch)
    dense = model_for_arch(arch)
    ratio = CostModel.from_model(model, shape).dense_macs / CostModel.from_model(dense, shape).dense_macs
    return model.eval(), dense.eval(), shape, ratio, ckpt
