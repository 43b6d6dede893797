"""Recipes: model recipes (``registry.yaml``), training recipes, their schema check and ``--set``.

Re-exports only. One named registry (:mod:`asczoo.recipes._named`: names, ``extends``, cycles) under
:mod:`asczoo.recipes.model_recipes` and :mod:`asczoo.recipes.training_recipes`; one merge
(:mod:`asczoo.recipes.merge`), one ``--set`` parser (:mod:`asczoo.recipes.overrides`), the section
settings with their defaults (:mod:`asczoo.recipes.settings`) and the schema check of part factories
(:mod:`asczoo.recipes.schema`: :func:`check_arguments`, public for plugins).
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
