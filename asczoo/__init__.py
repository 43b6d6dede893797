"""asczoo: a plugin-style model zoo for acoustic scene classification.

The public API is re-exported here and imported lazily, so ``import asczoo`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from asczoo.hookspecs import hookimpl

__version__ = "0.1.0"

_EXPORTS = {
    # models by name
    "list_models": "asczoo.factory",
    "list_pretrained": "asczoo.factory",
    "create_model": "asczoo.factory",
    "model_recipe": "asczoo.factory",
    "AscModel": "asczoo.model",
    # recipes
    "register_recipes": "asczoo.recipes",
    "RecipeError": "asczoo.arguments",
    # plugins
    "register_plugin": "asczoo.plugins",
    "PluginError": "asczoo.plugins",
    # audio and data
    "create_frontend": "asczoo.frontend",
    "create_dataset": "asczoo.datasets",
    "create_augmentation": "asczoo.augment",
    # hub and inference
    "from_pretrained": "asczoo.hub",
    # training
    "train": "asczoo.training",
    "evaluate": "asczoo.evaluation",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asczoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
