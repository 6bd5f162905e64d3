"""Rebuild a model from a checkpoint alone: architecture, removed channels (``site_keep``) and masks.

Other tools' pruned checkpoints fail with ``load_state_dict`` size mismatches because the narrower shapes are
not saved; dynprune's checkpoints carry the kept channel indices, so the shapes are rebuilt before loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from .data import DataSplits, load_dataset
from .engine import load_checkpoint, load_weights
from .models import create_model
from .sites import slice_site


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(plain model with the checkpoint's weights, checkpoint). Masks, if any, are re-attached as prune masks."""
    ckpt = load_checkpoint(path)
    arch = ckpt["arch"]
    model = create_model(
        arch["model"], arch["in_channels"], arch["num_classes"], arch["image_size"], width=arch["width"]
    )
    keep = ckpt.get("site_keep") or {}
    for site in model.channel_sites():
        if site.name in keep:
            slice_site(model, site, torch.tensor(keep[site.name]))
    state = ckpt["model"]
    if any(k.startswith("gate_set.") for k in state):
        raise ValueError(f"{path}: a gated checkpoint; rebuild it through its training config instead")
    modules = dict(model.named_modules())
    for key in state:
        if key.endswith("_mask"):
            path_, _, param = key[: -len("_mask")].rpartition(".")
            tprune.identity(modules[path_], param)  # same key layout; load_state_dict fills the real mask
    load_weights(model, state, str(path))
    return model, ckpt


def gated_model_from_checkpoint(path: str | Path) -> tuple[nn.Module, Any, dict]:
    """(gated model in eval mode, its GatedMethod, checkpoint) of a ``--gate`` run: the gates are rebuilt from the
    saved config (their calibration is already folded into the saved biases)."""
    from .gates import GatedMethod

    ckpt = load_checkpoint(path)
    cfg, arch = ckpt["config"], ckpt["arch"]
    if cfg.get("gate", "none") == "none":
        raise ValueError(f"{path}: not a gated run (gate = none)")
    model = create_model(
        arch["model"], arch["in_channels"], arch["num_classes"], arch["image_size"], width=arch["width"]
    )
    method = GatedMethod(
        cfg["gate"], cfg["target_macs"], group_size=cfg["gate_groups"], reduction=cfg["gate_reduction"], calibrate=False
    )
    model = method.prepare(model, (arch["in_channels"], arch["image_size"], arch["image_size"]))
    load_weights(model, ckpt["model"], str(path))
    return model.eval(), method, ckpt


def is_gated_checkpoint(path: str | Path) -> bool:
    """Whether the checkpoint is of a ``--gate`` run."""
    return (load_checkpoint(path).get("config") or {}).get("gate", "none") != "none"


def deployable_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(the model a run's latency is measured on, checkpoint): gated runs in deploy mode (closed channels
    skipped), the others as trained (hard-pruned ones already narrower, masked ones with their masks)."""
    if is_gated_checkpoint(path):
        from .gates.deploy import to_deploy

        model, _, ckpt = gated_model_from_checkpoint(path)
        return to_deploy(model), ckpt
    model, ckpt = model_from_checkpoint(path)
    return model.eval(), ckpt


def pruned_and_dense_from_checkpoint(
    path: str | Path,
) -> tuple[nn.Module, nn.Module, tuple[int, int, int], float, dict]:
    """(the statically pruned model, masks made permanent; a fresh model of its dense architecture; input shape;
    structured MACs pruned / dense; checkpoint) for timing a static run against its dense baseline."""
    from .cost import CostModel
    from .prune.masks import make_permanent

    model, ckpt = model_from_checkpoint(path)
    make_permanent(model)
    arch = ckpt["arch"]
    shape = (arch["in_channels"], arch["image_size"], arch["image_size"])
    dense = create_model(
        arch["model"], arch["in_channels"], arch["num_classes"], arch["image_size"], width=arch["width"]
    )
    ratio = CostModel.from_model(model, shape).dense_macs / CostModel.from_model(dense, shape).dense_macs
    return model.eval(), dense.eval(), shape, ratio, ckpt


def data_of_checkpoint(ckpt: dict, data_dir: str | None = None) -> DataSplits:
    """The data set (and validation split) the checkpoint was trained with, read from its saved config."""
    cfg = ckpt.get("config") or {}
    return load_dataset(
        cfg.get("dataset", "fashion-mnist"),
        data_dir or cfg.get("data_dir"),
        cfg.get("val_size", 5000),
        image_size=cfg.get("image_size", 224),
    )
