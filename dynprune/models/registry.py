"""Model registry: ``@register_model`` entry points and ``create_model`` (timm-style)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from ..registry import Registry, UnknownNameError
from ..sites import ChannelSite
from .entry import build_entry_model, is_entry_point


class SiteModel(nn.Module):
    """A classifier that lists its channel sites (stable names, in forward order)."""

    def channel_sites(self) -> list[ChannelSite]:
        raise NotImplementedError


ModelFn = Callable[..., SiteModel]
MODELS: Registry[ModelFn] = Registry("model")
UnknownModelError = UnknownNameError
register_model = MODELS.add  # ``@register_model``: the registry's one way, named for the zoo files


def with_recipe(**values: Any) -> Callable[[ModelFn], ModelFn]:
    """Decorator (under ``@register_model``): the training values this model learns well with (lr, schedule,
    weight decay), the defaults of ``--model NAME`` where no flag or preset sets them."""

    def mark(fn: ModelFn) -> ModelFn:
        fn.recipe = MappingProxyType(dict(values))  # type: ignore[attr-defined]
        return fn

    return mark


def model_recipe(name: str) -> Mapping[str, Any]:
    """The model's own training recipe (empty for a model registered without one, or a user's entry point)."""
    if is_entry_point(name):
        return MappingProxyType({})
    return getattr(MODELS.get(name), "recipe", MappingProxyType({}))


def list_models() -> list[str]:
    return MODELS.names()


def create_model(
    name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **kwargs: object
) -> SiteModel:
    """Build a zoo model, or a user's ``package.module:callable`` (``models/entry.py``); ``width`` (channel
    multiplier) is accepted by every zoo model."""
    if is_entry_point(name):
        return build_entry_model(name, in_channels, num_classes, image_size, float(kwargs.pop("width", 1.0)))
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


def model_for_arch(arch: dict) -> SiteModel:
    """A fresh model of the architecture a checkpoint records (``arch``: model, width, in_channels, ...)."""
    return create_model(
        arch["model"], arch["in_channels"], arch["num_classes"], arch["image_size"], width=arch["width"]
    )


def input_shape(arch: dict) -> tuple[int, int, int]:
    return (arch["in_channels"], arch["image_size"], arch["image_size"])


def scaled(channels: int, width: float) -> int:
    """Channels after a width multiplier; never below 1."""
    return max(1, round(channels * width))
