"""Recipes: model recipes (``registry.yaml``), training recipes, their schema check and ``--set``.

Re-exports only; see :mod:`asczoo.recipes.model_recipes`, :mod:`asczoo.recipes.training_recipes`,
:mod:`asczoo.recipes.schema` and :mod:`asczoo.recipes.overrides`.
"""

from asczoo.recipes.model_recipes import (
    ENV_VAR, SECTION_KIND, SECTIONS, RecipeRegistry, UnavailablePart, deep_merge, forget_user_recipes, invalidate,
    register_recipes, registry, split_name, validate_recipe,
)
from asczoo.recipes.schema import RecipeError, check_arguments

__all__ = [
    "ENV_VAR", "SECTION_KIND", "SECTIONS", "RecipeError", "RecipeRegistry", "UnavailablePart", "check_arguments",
    "deep_merge", "forget_user_recipes", "invalidate", "register_recipes", "registry", "split_name",
    "validate_recipe",
]
