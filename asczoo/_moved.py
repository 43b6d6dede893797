"""Old module paths of asczoo, kept importable after the package was laid out by concern.

``import asczoo.datasets`` (and every other path below) gives the very module that now lives at its
new path, so code written against the flat layout keeps working, monkeypatching included.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module path -> the module's path now
MOVED = {
    "asczoo.model": "asczoo.models.model",
    "asczoo.factory": "asczoo.models.factory",
    "asczoo.model_card": "asczoo.hub.card",
    "asczoo.audio": "asczoo.data.audio",
    "asczoo.data_checks": "asczoo.data.checks",
    "asczoo.datasets": "asczoo.data.datasets",
    "asczoo.feature_cache": "asczoo.data.feature_cache",
    "asczoo.frontend": "asczoo.data.frontend",
    "asczoo.synth": "asczoo.data.synth",
    "asczoo.augment": "asczoo.data.augment",
    "asczoo.engine": "asczoo.training.engine",
    "asczoo.checkpoint": "asczoo.training.checkpoint",
    "asczoo.evaluation": "asczoo.training.evaluation",
    "asczoo.training_recipes": "asczoo.recipes.training_recipes",
    "asczoo.arguments": "asczoo.recipes.schema",
    "asczoo.overrides": "asczoo.recipes.overrides",
    "asczoo.crossval": "asczoo.training.crossval",
    "asczoo.distill": "asczoo.training.distill",
    "asczoo.kd_loss": "asczoo.training.kd_loss",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands out the module at its new path (one module, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # Already executed under its new name; the import system has just given it the old name's
        # spec, so give it back its own (reload, pickling and tooling see the real module).
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
