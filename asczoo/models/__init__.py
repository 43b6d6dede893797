"""Models by name: building a model from its recipe, the assembled :class:`AscModel`.

Re-exports only; see :mod:`asczoo.models.factory` and :mod:`asczoo.models.model`.
"""

from asczoo.models.factory import (
    DEFAULT_NUM_CLASSES, build_model, create_model, initialise_from, list_models, list_pretrained, model_recipe,
)
from asczoo.models.model import AscModel

__all__ = [
    "AscModel", "DEFAULT_NUM_CLASSES", "build_model", "create_model", "initialise_from", "list_models",
    "list_pretrained", "model_recipe",
]
