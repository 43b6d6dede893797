"""Building a model from a validated recipe, and the stage 1 -> stage 2 initialisation.

:func:`build_model` asks the plugin registry for each part the recipe names and assembles an
:class:`~asczoo.models.model.AscModel`; :func:`initialise_from` copies a trained model's backbone
(through the inflator), relation blocks and normalisation, and its head when it fits, into a new
model: the paper's stage 1 -> stage 2 step, and fine-tuning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from asczoo import plugins
from asczoo.data.frontend import create_frontend
from asczoo.hub.files import refuse_non_finite
from asczoo.models.model import AscModel
from asczoo.recipes.model_recipes import deep_merge

DEFAULT_NUM_CLASSES = 10


def build_model(recipe: Mapping[str, Any], *, name: str, tag: str | None = None) -> AscModel:
    """Assemble an :class:`AscModel` from a validated recipe."""

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
            block_args = deep_merge(args, per_placement.get(where))
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

    state = load_file(str(path))
    refuse_non_finite(state, f"init_from: {path}")  # NaN in, NaN weights out, rc 0
    return state


def _source_config(source: nn.Module | str | os.PathLike) -> dict[str, Any]:
    """What the source says about itself: a model's own config, or the ``config.json`` beside saved
    weights (read as JSON, nothing executed); empty when there is none (a bare ``.safetensors`` file)."""
    import json

    if isinstance(source, AscModel):
        return {"classes": list(source.classes), "quantization": getattr(source, "quantization", None)}
    if isinstance(source, nn.Module):
        return {}
    path = Path(source)
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def initialise_from(model: AscModel, source: nn.Module | str | os.PathLike) -> None:
    """Initialise ``model`` from a trained model: a segment model (the paper's stage 1 -> stage 2
    step, through the inflator) or a model of the same architecture (fine-tuning).

    Copies the backbone (strictly: the architectures must match; 2D weights are inflated, 3D ones taken
    as they are), the relation blocks when the source has them (strictly: the same blocks at the same
    places), the normalisation statistics, and the head when it predicts the same classes with the same
    shapes (otherwise the head stays freshly initialised: a new head for new classes). A quantised
    (int8/fp16) source is refused: fine-tune the float model it came from.
    """
    described = _source_config(source)
    if described.get("quantization"):
        raise ValueError(f"init_from: {source} holds {described['quantization'].get('scheme', 'quantised')} "
                         "weights for inference; initialise from the float model it was quantised from")
    state = _read_state(source)
    backbone_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone_state:
        raise ValueError("init_from: the source has no 'backbone.*' weights; is it an asczoo model?")
    relation_state = {k[len("relations."):]: v for k, v in state.items() if k.startswith("relations.")}
    if relation_state and not len(model.relations):
        raise ValueError(f"init_from: the source has relation blocks and {model.name!r} has none; initialise "
                         "a model with the same blocks, or start from the source's segment model")
    try:
        model.inflator.load_2d_state(model.backbone, backbone_state)
    except RuntimeError as exc:
        raise ValueError(f"init_from: the source's backbone does not fit {model.name!r}'s backbone: {exc}") from exc
    if relation_state:
        try:
            model.relations.load_state_dict(relation_state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"init_from: the source's relation blocks do not fit {model.name!r}'s: "
                             f"{str(exc).splitlines()[0]} (same relation plugin, placements and widths expected)") from None
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    own_head = model.head.state_dict()
    same_classes = "classes" not in described or list(described["classes"]) == list(model.classes)
    if same_classes and head_state and head_state.keys() == own_head.keys() and all(
        head_state[k].shape == own_head[k].shape for k in own_head
    ):
        model.head.load_state_dict(head_state)
    if "norm_mean" in state and state["norm_mean"].shape == model.norm_mean.shape:
        model.set_normalization(state["norm_mean"], state["norm_std"])
