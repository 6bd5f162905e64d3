"""Model registry: ``@register_model`` entry points and ``create_model`` (timm-style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..sites import ChannelSite


class SiteModel(nn.Module):
    """A classifier that lists its channel sites (stable names, in forward order)."""

    def channel_sites(self) -> list[ChannelSite]:
        raise NotImplementedError


ModelFn = Callable[..., SiteModel]
_REGISTRY: dict[str, ModelFn] = {}


class UnknownModelError(ValueError):
    pass


def register_model(fn: ModelFn) -> ModelFn:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(
    name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **kwargs: object
) -> SiteModel:
    """Build a zoo model; ``width`` (channel multiplier) is accepted by every model."""
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    model = _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
    return model


def scaled(channels: int, width: float) -> int:
    """Channels after a width multiplier; never below 1."""
    return max(1, round(channels * width))
