"""``--init``: a run's starting weights, from a checkpoint of the same model or (CIFAR ResNets) of a deeper or
wider one, cut to this run's model (``models/cut.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoints import CheckpointError, load_checkpoint, load_weights
from .models import model_for_arch
from .models.cut import cut_into, cut_refusal

#: what must agree for a cut: the data the weights were trained on (the model and its width may differ)
SAME_DATA = ("in_channels", "num_classes", "image_size")


def load_init(model: nn.Module, path: str | Path, arch: dict[str, Any]) -> str | None:
    """Load ``path``'s weights into ``model`` (of ``arch``); returns a line to print when they were cut."""
    state = load_checkpoint(path)
    source_arch = {**state["arch"], "width": state["arch"].get("width") or 1.0}  # older runs: no width, full
    if source_arch == arch:
        load_weights(model, state["model"], str(path))
        return None
    made_for = f"{path}: made for {source_arch}, but this run is {arch}"
    if any(source_arch.get(key) != arch[key] for key in SAME_DATA):
        raise CheckpointError(made_for)
    source = model_for_arch(source_arch)
    if (why := cut_refusal(source, model)) is not None:  # the shapes first: an unrelated model says so
        raise CheckpointError(f"{made_for} ({why})")
    try:
        load_weights(source, state["model"], str(path))
    except CheckpointError:
        raise CheckpointError(
            f"{made_for}, and its weights are not its dense model's (a pruned or gated run?): a smaller model is "
            "cut out of a dense run"
        ) from None
    cut_into(model, source)
    return (
        f"--init {path}: {source_arch['model']} at width {source_arch['width']} cut to {arch['model']} at "
        f"width {arch['width']} (its first blocks per stage, its most important channels)"
    )
