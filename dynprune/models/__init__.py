"""Model zoo. Importing this package registers every model: each module of the package is imported, and a zoo
module's ``@register_model`` functions register themselves, so a new zoo model is one new file."""

import importlib
import pkgutil

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

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):  # one order on every machine
    importlib.import_module(f"{__name__}.{_module.name}")

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
