"""Model zoo. Importing this package registers every model."""

from . import lenet, mobilenetv2, resnet_cifar, resnet_imagenet, vgg  # noqa: F401  (registration)
from .registry import (
    SiteModel,
    UnknownModelError,
    create_model,
    input_shape,
    list_models,
    model_for_arch,
    model_recipe,
    register_model,
    with_recipe,
)

__all__ = [
    "SiteModel",
    "UnknownModelError",
    "create_model",
    "input_shape",
    "list_models",
    "model_for_arch",
    "model_recipe",
    "register_model",
    "with_recipe",
]
