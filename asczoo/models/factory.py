"""Models by name: :func:`list_models`, :func:`list_pretrained`, :func:`create_model`.

A name is ``arch`` or ``arch.tag`` (timm's convention): ``arch`` is a recipe of the registry, the
optional ``tag`` selects published weights pinned in that recipe's ``weights`` section.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any, Mapping

from torch import nn

from asczoo.models.build import DEFAULT_NUM_CLASSES, build_model, initialise_from  # noqa: F401 - re-exported
from asczoo.models.model import AscModel
from asczoo.models.pretrained import from_pretrained, load_registry_weights
from asczoo.names import REGISTRY, parse_model_name, split_name
from asczoo.recipes import model_recipes as recipes


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the models that can be built here, filtered with shell-style wildcards."""
    return recipes.registry().names(pattern)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``arch.tag`` names that have published weights pinned in the registry."""
    reg = recipes.registry()
    names = []
    for arch in reg.names():
        for tag in (reg.get(arch).resolved or {}).get("weights") or {}:
            if fnmatch.fnmatchcase(f"{arch}.{tag}", pattern):
                names.append(f"{arch}.{tag}")
    return sorted(names)


def model_recipe(name: str, *, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved recipe of a registry model (``extends`` applied, ``overrides`` merged, validated)."""
    return recipes.model_recipe(name, overrides=overrides)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: bool = False,
    init_from: nn.Module | str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AscModel:
    """Build a registry model by name.

    Args:
        name: ``arch`` or ``arch.tag`` (see :func:`list_models`, :func:`list_pretrained`), or
            ``hf-hub:org/name`` for a model published on the Hub.
        num_classes: size of the output layer; default: the recipe's (10 DCASE scenes).
        pretrained: load the published weights the registry pins for the tag (the first tag if none
            is given).
        init_from: a trained segment model (module, ``model.safetensors`` file or a saved model
            folder) whose backbone initialises this model's through the inflator: the paper's
            stage 1 -> stage 2 step. The head is copied too when its shape matches.
        overrides: nested mapping deep-merged into the recipe, e.g.
            ``{"backbone": {"channels": [16, 32, 64, 128], "stem_width": 16}, "relation": {"k": 8}}``.

    Returns:
        An :class:`~asczoo.models.model.AscModel`: ``(B, N, 3, F, T) -> (B, num_classes)`` logits.
    """
    if isinstance(name, str) and name.startswith("hf-hub:"):
        if init_from is not None or overrides:
            raise ValueError("create_model('hf-hub:...'): init_from and overrides apply to registry names only")
        model = from_pretrained(name)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(
                f"{name} was published with {model.num_classes} classes; num_classes={num_classes} "
                "would need a new head (build the registry model and use init_from instead)"
            )
        return model
    arch, tag = split_name(name)
    recipe = model_recipe(name, overrides=overrides)
    weights = recipe.get("weights") or {}
    if tag is not None and tag not in weights:
        known = ", ".join(sorted(weights)) or "none"
        raise KeyError(f"model {arch!r} has no weights tagged {tag!r} (tags: {known}; see `asczoo list --pretrained`)")
    if pretrained and tag is None:
        if not weights:
            raise ValueError(f"model {arch!r} has no published weights; use pretrained=False or train it")
        tag = next((t for t, spec in weights.items() if spec.get("default")), next(iter(weights)))
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if recipe.get("classes") and len(recipe["classes"]) != num_classes:
            recipe.pop("classes")
        recipe["num_classes"] = num_classes
    model = build_model(recipe, name=arch, tag=tag)
    if init_from is not None:
        initialise_from(model, init_from)
    if pretrained:
        load_registry_weights(model, weights[tag], name=f"{arch}.{tag}")
    return model


def load_model(spec: str | os.PathLike, *, revision: str | None = None, device=None):
    """A trained model from what a user types: a folder, ``hf-hub:org/name``, ``org/name`` or a
    registry ``arch[.tag]`` with published weights (the CLI's ``MODEL`` argument)."""

    text = os.fspath(spec)
    if parse_model_name(text, revision).kind != REGISTRY:
        return from_pretrained(text, revision=revision, device=device)
    arch, tag = split_name(text)
    weights = (recipes.registry().get(arch).resolved or {}).get("weights") or {}
    if not weights:
        raise ValueError(
            f"model {arch!r} has no published weights, so it would predict with random weights; "
            "give a trained model folder or a Hub id (hf-hub:org/name)"
        )
    model = create_model(text, pretrained=True)
    return model.to(device) if device is not None else model
