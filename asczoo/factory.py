"""Models by name: :func:`list_models`, :func:`list_pretrained`, :func:`create_model`.

A name is ``arch`` or ``arch.tag`` (timm's convention): ``arch`` is a recipe of the registry, the
optional ``tag`` selects published weights pinned in that recipe's ``weights`` section.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from asczoo import plugins, recipes
from asczoo.arguments import RecipeError
from asczoo.model import AscModel

DEFAULT_NUM_CLASSES = 10


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
    arch, _ = recipes.split_name(name)
    recipe = copy.deepcopy(recipes.registry().get(arch).resolved)
    if overrides:
        if not isinstance(overrides, Mapping):
            raise RecipeError(f"create_model({name!r}): overrides must be a nested mapping, got {type(overrides).__name__}")
        recipe = recipes.deep_merge(recipe, overrides)
        recipe = recipes.validate_recipe(recipe, where=f"create_model({name!r}) with overrides")
    return recipe


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
        An :class:`~asczoo.model.AscModel`: ``(B, N, 3, F, T) -> (B, num_classes)`` logits.
    """
    if isinstance(name, str) and name.startswith("hf-hub:"):
        if init_from is not None or overrides:
            raise ValueError("create_model('hf-hub:...'): init_from and overrides apply to registry names only")
        from asczoo.hub import from_pretrained

        model = from_pretrained(name)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(
                f"{name} was published with {model.num_classes} classes; num_classes={num_classes} "
                "would need a new head (build the registry model and use init_from instead)"
            )
        return model
    arch, tag = recipes.split_name(name)
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
        from asczoo.hub import load_registry_weights

        load_registry_weights(model, weights[tag], name=f"{arch}.{tag}")
    return model


def build_model(recipe: Mapping[str, Any], *, name: str, tag: str | None = None) -> AscModel:
    """Assemble an :class:`AscModel` from a validated recipe."""
    from asczoo.frontend import create_frontend

    def args_of(section: str) -> tuple[str, dict[str, Any]]:
        spec = dict(recipe[section])
        return spec.pop("plugin"), spec

    frontend = create_frontend(**recipe["frontend"])
    input_shape = tuple(frontend.output_shape)
    plugin, args = args_of("backbone")
    args.setdefault("in_chans", input_shape[1])
    backbone2d = plugins.get_part("backbone", plugin).factory(**args)
    plugin, args = args_of("inflator")
    inflator = plugins.get_part("inflator", plugin).factory(**args)
    backbone, layout = inflator.inflate(backbone2d)

    relations: dict[str, tuple[nn.Module, str]] = {}
    if recipe.get("relation"):
        plugin, args = args_of("relation")
        placement = args.pop("placement")
        position = args.pop("position", "after_block")
        per_placement = args.pop("per_placement", None) or {}
        factory = plugins.get_part("relation_block", plugin).factory
        for where in placement:
            block_args = recipes.deep_merge(args, per_placement.get(where))
            block = factory(channels=backbone.block_channels(where), **block_args)
            relations[where] = (block, position)

    classes = recipe.get("classes")
    num_classes = recipe.get("num_classes") or (len(classes) if classes else DEFAULT_NUM_CLASSES)
    if not classes:
        classes = [f"class_{i}" for i in range(num_classes)]
    plugin, args = args_of("head")
    head = plugins.get_part("head", plugin).factory(
        in_features=backbone.num_features, num_classes=num_classes, **args
    )
    return AscModel(
        name=name, tag=tag, recipe=recipe, backbone=backbone, layout=layout, inflator=inflator,
        head=head, relations=relations, frontend_config=frontend.config, input_shape=input_shape,
        classes=classes,
    )


def _read_state(source: nn.Module | str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors":
        raise ValueError(
            f"init_from: {path} is not a .safetensors file; asczoo never unpickles weights "
            "(convert .pt/.bin checkpoints to safetensors first)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"init_from: no such file {path}")
    from safetensors.torch import load_file

    from asczoo.hub import refuse_non_finite

    state = load_file(str(path))
    refuse_non_finite(state, f"init_from: {path}")  # NaN in, NaN weights out, rc 0
    return state


def initialise_from(model: AscModel, source: nn.Module | str | os.PathLike) -> None:
    """Initialise ``model`` from a trained segment model (stage 1 -> stage 2), through the inflator.

    Copies the backbone (strictly: the architectures must match), the normalisation statistics, and
    the head when its parameters have the same shapes (otherwise the head stays freshly initialised).
    """
    state = _read_state(source)
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone_state:
        raise ValueError("init_from: the source has no 'backbone.*' weights; is it an asczoo model?")
    if isinstance(source, AscModel) and source.relations:
        raise ValueError(
            f"init_from: {source.name!r} has relation blocks; init_from takes a segment model (stage 1)"
        )
    try:
        model.inflator.load_2d_state(model.backbone, backbone_state)
    except RuntimeError as exc:
        raise ValueError(f"init_from: the source's backbone does not fit {model.name!r}'s backbone: {exc}") from exc
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    own_head = model.head.state_dict()
    if head_state and head_state.keys() == own_head.keys() and all(
        head_state[k].shape == own_head[k].shape for k in own_head
    ):
        model.head.load_state_dict(head_state)
    if "norm_mean" in state and state["norm_mean"].shape == model.norm_mean.shape:
        model.set_normalization(state["norm_mean"], state["norm_std"])
