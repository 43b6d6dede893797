"""asczoo: a plugin-style model zoo for acoustic scene classification.

The public API is re-exported here and imported on first use, so ``import asczoo`` stays cheap (it
does not import torch: the ``asczoo`` command sets its OpenMP policy before torch loads).
"""

from __future__ import annotations

from typing import Any

from asczoo.hookspecs import hookimpl

from asczoo.version import __version__

__all__ = [
    "hookimpl", "__version__",
    # models by name
    "list_models", "list_pretrained", "create_model", "model_recipe", "AscModel",
    # recipes
    "register_recipes", "RecipeError",
    # plugins
    "register_plugin", "PluginError",
    # audio and data
    "create_frontend", "create_dataset", "create_augmentation",
    # saved models and the Hub
    "from_pretrained",
    # training
    "train", "finetune", "evaluate",
]


def _public(name: str) -> Any:
    """The public object ``name``, imported from the one module that defines it (plain imports, so
    that every dependency of this package is visible to the import checks)."""
    if name in ("list_models", "list_pretrained", "create_model", "model_recipe"):
        from asczoo.models import factory as module
    elif name == "AscModel":
        from asczoo.models import model as module
    elif name == "register_recipes":
        from asczoo.recipes import model_recipes as module
    elif name == "RecipeError":
        from asczoo.recipes import schema as module
    elif name in ("register_plugin", "PluginError"):
        from asczoo import plugins as module
    elif name == "create_frontend":
        from asczoo.data import frontend as module
    elif name == "create_dataset":
        from asczoo.data import datasets as module
    elif name == "create_augmentation":
        from asczoo.data import augment as module
    elif name == "from_pretrained":
        from asczoo.models import pretrained as module
    elif name == "train":
        from asczoo.training import runs as module
    elif name == "finetune":
        from asczoo.training import finetuning as module
    elif name == "evaluate":
        from asczoo.training import evaluation as module
    else:
        raise AttributeError(f"module 'asczoo' has no attribute {name!r}")
    return getattr(module, name)


def __getattr__(name: str) -> Any:
    value = _public(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
