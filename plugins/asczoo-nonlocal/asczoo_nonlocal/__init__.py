"""asczoo-nonlocal: a non-local (self-attention) relation block for asczoo, as a plugin package.

The package is one asczoo plugin (entry point ``nonlocal`` of group ``asczoo``, see pyproject.toml).
It registers the relation block ``nonlocal`` and the recipes in ``recipes.yaml``
(``nonlocal-net-resnet18``, ``nonlocal-net-resnet18-cross``).
"""

from __future__ import annotations

from pathlib import Path

from asczoo import hookimpl
from asczoo_nonlocal.block import NonLocalBlock, non_local

__version__ = "0.1.0"
__all__ = ["NonLocalBlock", "non_local", "RECIPES"]

RECIPES = Path(__file__).with_name("recipes.yaml")


@hookimpl
def asczoo_register_relation_blocks(register):
    register("nonlocal", non_local)


@hookimpl
def asczoo_register_recipes(register):
    register(RECIPES)
