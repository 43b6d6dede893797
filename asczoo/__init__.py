"""asczoo: a plugin-style model zoo for acoustic scene classification.

The public API is re-exported here and imported lazily, so ``import asczoo`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from asczoo import _moved
from asczoo.hookspecs import hookimpl

_moved.install()  # old flat module paths (asczoo.datasets, asczoo.engine, ...) stay importable

__version__ = "0.1.0"

_EXPORTS = {
    # models by name
    "list_models": "asczoo.models.factory",
    "list_pretrained": "asczoo.models.factory",
    "create_model": "asczoo.models.factory",
    "model_recipe": "asczoo.models.factory",
    "AscModel": "asczoo.models.model",
    # recipes
    "register_recipes": "asczoo.recipes.model_recipes",
    "RecipeError": "asczoo.recipes.schema",
    # plugins
    "register_plugin": "asczoo.plugins",
    "PluginError": "asczoo.plugins",
    # audio and data
    "create_frontend": "asczoo.data.frontend",
    "create_dataset": "asczoo.data.datasets",
    "create_augmentation": "asczoo.data.augment",
    # hub and inference
    "from_pretrained": "asczoo.models.pretrained",
    # training
    "train": "asczoo.training.runs",
    "evaluate": "asczoo.training.evaluation",
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
