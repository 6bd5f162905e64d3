"""A user's own model from the shell: ``--model package.module:callable`` (the setuptools entry-point form).

The callable is imported on use and called with the keyword arguments it takes among ``num_classes``,
``in_channels``, ``image_size`` and ``width`` (a ``**kwargs`` callable gets ``num_classes`` and ``in_channels``).
A model without its own ``channel_sites()`` gets them from Torch-Pruning's dependency graph. The string is what
``config.yaml`` and the checkpoint's ``arch`` record, so ``--resume``, a rebuild, ``export``, ``bench`` and the
comparison build the same model again wherever the module is importable (the working directory counts).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..base import ConfigError
from ..sites import probe_forward


def is_entry_point(name: str) -> bool:
    """Whether ``--model`` names ``package.module:callable`` rather than a zoo model."""
    return ":" in name


def load_entry_point(name: str) -> Callable[..., nn.Module]:
    """The callable ``name`` points at; ConfigError (one line) when it cannot be imported or found."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--model {name!r}: expected package.module:callable (e.g. mymodels:small_cnn)")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--model {name}: cannot import {module_name} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--model {name}: {module_name} has no {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--model {name}: {attr} is not callable")
    return target


def _arguments(fn: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature (some builtins): call it bare
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in offered.items() if k in params or k in ("num_classes", "in_channels")}
    return {k: v for k, v in offered.items() if k in params}


def build_entry_model(name: str, in_channels: int, num_classes: int, image_size: int, width: float) -> nn.Module:
    """The user's model for this data set, with channel sites; ConfigError where it cannot serve."""
    from .depgraph import attach_dependency_sites  # torch-pruning is imported only for such models

    fn = load_entry_point(name)
    offered = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size, "width": width}
    kwargs = _arguments(fn, offered)
    if width != 1.0 and "width" not in kwargs:
        raise ConfigError(f"--width {width}: {name} takes no width argument")
    kwargs = {k: v for k, v in kwargs.items() if k != "width" or width != 1.0}
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {name}: returned a {type(model).__name__}, not a torch.nn.Module")
    shape = (in_channels, image_size, image_size)
    out = probe_forward(model, shape)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"--model {name}: gives {got} for one {shape} image of a {num_classes}-class data set; expected "
            f"(1, {num_classes}) logits (take num_classes and in_channels as keyword arguments)"
        )
    if not hasattr(model, "channel_sites"):
        attach_dependency_sites(model, shape)
    return model
