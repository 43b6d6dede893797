"""Saved and published models, built again: ``from_pretrained``, ``load_model``, registry weights.

:mod:`asczoo.hub` finds, downloads and reads the files (``config.json``, ``model.safetensors``); this
module turns them into a model: it validates the saved recipe strictly, builds it through the plugin
registry (part names are looked up, never imported) and loads the weights strictly.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Mapping

import torch

from asczoo import plugins
from asczoo.hub.files import (
    CONFIG_NAME, HF_PREFIX, WEIGHTS_NAME, ModelFormatError, read_config, read_weights, resolve_files,
)
from asczoo.models.build import build_model
from asczoo.stored_weights import loaded_state, value_problems
from asczoo.stored_weights import restore as restore_quantization
from asczoo.recipes.model_recipes import SECTION_KIND, SECTIONS, UnavailablePart, validate_recipe
from asczoo.recipes.schema import RecipeError


#: part options that would make a part fetch or read weights of its own (timm's, for instance);
#: a saved model's recipe may not turn them on
_EXTERNAL_WEIGHT_KEYS = {
    "pretrained", "timm_pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
    "weights", "weights_path",
}


def from_pretrained(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
):
    """Load a saved model from a local folder, ``org/name`` or ``hf-hub:org/name[@revision]``.

    A path that exists locally wins over a Hub id. ``revision`` (a branch, tag or commit hash) applies
    to Hub ids; the download uses the Hugging Face cache (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``) and the
    usual token. Loading is strict: missing or unexpected weights, wrong shapes, a frontend or class
    list that disagrees with the weights are errors. Returns the model in eval mode.
    """
    model, _ = load_pretrained(
        source, revision=revision, device=device, cache_dir=cache_dir, token=token,
        force_download=force_download, local_files_only=local_files_only,
    )
    return model


def load_pretrained(source: str | os.PathLike, *, revision: str | None = None, device=None, **download):
    """Like :func:`from_pretrained`, but returns ``(model, config)`` with the ``config.json`` mapping."""
    files = resolve_files(source, revision=revision, **download)
    config = read_config(files.config, label=files.label)
    model = build_from_config(config, label=files.label)
    if config.get("quantization"):  # int8/fp16 (asczoo.deploy.quantize): folded norms and int8 layers first
        restore_quantization(model, config["quantization"])
    state = loaded_state(model, read_weights(files.weights, label=files.label), config.get("quantization"))
    load_state_strict(model, state, label=files.label)
    _check_normalization(model, config, files.label)
    model.metrics = copy.deepcopy(config.get("metrics") or {})
    if device is not None:
        model.to(device)
    return model.eval(), config


def build_from_config(config: Mapping[str, Any], *, label: str) -> Any:
    """Assemble the model ``config.json`` describes: validate the recipe strictly, then build it.

    Part names resolve through the plugin registry only; an unknown part is an error that names the
    package that provided it when the model was saved.
    """

    where = f"{label}: {CONFIG_NAME}"
    recipe = copy.deepcopy(config["recipe"])
    for section in SECTIONS:
        spec = recipe.get(section)
        for key in sorted(set(spec) & _EXTERNAL_WEIGHT_KEYS) if isinstance(spec, dict) else ():
            if spec[key]:
                raise ModelFormatError(
                    f"{where}: recipe section {section!r} sets {key!r} = {spec[key]!r}, which would load "
                    f"weights from outside the model folder; a saved model's weights are its {WEIGHTS_NAME}"
                )
    recipe["frontend"] = copy.deepcopy(config["frontend"])  # the exact frontend the weights expect
    recipe["classes"] = list(config["classes"])
    recipe["num_classes"] = len(config["classes"])
    try:
        recipe = validate_recipe(recipe, where=f"{where}, key 'recipe'")
        model = build_model(recipe, name=config["name"], tag=config.get("tag"))
    except (UnavailablePart, plugins.UnknownPartError) as exc:
        raise UnavailablePart(f"{exc}{_install_hint(config)}") from None
    except RecipeError:
        raise
    except (ValueError, TypeError) as exc:  # a part's own checks (bounds, combinations) refused the recipe
        raise ModelFormatError(f"{where}, key 'recipe': {exc}") from None
    if model.frontend_config != config["frontend"]:
        diff = _differences(config["frontend"], model.frontend_config)
        raise ModelFormatError(f"{where}: the frontend built here differs from the saved one: {diff}")
    if "input_shape" in config and list(model.input_shape) != config["input_shape"]:
        raise ModelFormatError(
            f"{where}: key 'input_shape' is {config['input_shape']}, but the model built from the recipe "
            f"takes {list(model.input_shape)}"
        )
    return model


def _install_hint(config: Mapping[str, Any]) -> str:
    """Which packages the saved model's parts came from, as an install hint (text only)."""

    hints = []
    for section, info in sorted((config.get("plugins") or {}).items()):
        if section not in SECTION_KIND or not isinstance(info, dict) or not isinstance(info.get("part"), str):
            continue
        kind = SECTION_KIND[section]
        try:
            plugins.get_part(kind, info["part"])
            continue
        except (plugins.UnknownPartError, KeyError):
            pass
        package, version = info.get("package"), info.get("version")
        if isinstance(package, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", package):
            pinned = f"{package}=={version}" if isinstance(version, str) and version else package
            hints.append(
                f"{section} part {info['part']!r} came from plugin {info.get('plugin')!r} of the package "
                f"{package!r}: pip install {pinned!r}"
            )
        else:
            hints.append(f"{section} part {info['part']!r} came from plugin {info.get('plugin')!r}")
    return (" This model was saved with: " + "; ".join(hints) + ".") if hints else ""


def _differences(saved: Mapping[str, Any], built: Mapping[str, Any]) -> str:
    keys = sorted(set(saved) | set(built))
    return ", ".join(
        f"{k}: saved {saved.get(k, '<absent>')!r}, built {built.get(k, '<absent>')!r}"
        for k in keys if saved.get(k, "<absent>") != built.get(k, "<absent>")
    )


def load_state_strict(model, state: Mapping[str, torch.Tensor], *, label: str) -> None:
    """``model.load_state_dict(state)``, first checking names, shapes and dtypes for a message naming them.

    The dtypes must be the model's own: weights stored as fp16, int64 or bool are refused rather than
    cast (no widening either: a model saved in half precision is loaded into a half-precision model).
    Values that fit but make no sense (:func:`asczoo.stored_weights.value_problems`: a zero int8 scale,
    a zero point outside quint8, a std of 0) are refused too, naming the tensor.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape)
    )
    # no silent cast: load_state_dict would copy fp16 (precision already lost), int64 or bool tensors
    # into float32 parameters without a word; a file must hold the dtypes the model has
    dtypes = sorted(
        f"{k} (file {str(state[k].dtype).removeprefix('torch.')}, model {str(own[k].dtype).removeprefix('torch.')})"
        for k in set(own) & set(state) if state[k].dtype != own[k].dtype
    )
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes),
                        ("wrong dtype", dtypes)):
        if items:
            more = f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:8])}{more}")
    if problems:
        raise ModelFormatError(
            f"{label}: {WEIGHTS_NAME} does not fit {model.name!r} (strict loading): " + "; ".join(problems)
        )
    nonsense = value_problems(model, dict(state))  # would load, then predict one class or fail at forward
    if nonsense:
        more = f" (and {len(nonsense) - 4} more)" if len(nonsense) > 4 else ""
        raise ModelFormatError(f"{label}: {WEIGHTS_NAME}: tensor " + "; tensor ".join(nonsense[:4]) + more)
    model.load_state_dict(state, strict=True)


def _check_normalization(model, config: Mapping[str, Any], label: str) -> None:
    norm = config.get("normalization")
    if not norm:
        return
    try:
        mean = torch.tensor(norm["mean"], dtype=torch.float32)
        std = torch.tensor(norm["std"], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{label}: {CONFIG_NAME}: key 'normalization' must hold 'mean' and 'std' arrays ({exc})") from None
    if not (mean.shape == model.norm_mean.shape and torch.allclose(mean, model.norm_mean.cpu(), atol=1e-6)
            and std.shape == model.norm_std.shape and torch.allclose(std, model.norm_std.cpu(), atol=1e-6)):
        raise ModelFormatError(
            f"{label}: the normalisation statistics in {CONFIG_NAME} differ from norm_mean/norm_std in "
            f"{WEIGHTS_NAME}; the folder is inconsistent"
        )


def load_registry_weights(model, weights: Mapping[str, Any], *, name: str, **download) -> None:
    """Load the published weights the registry pins for ``name`` (``arch.tag``) into ``model``, strictly.

    ``weights`` is the registry's ``{repo_id, revision, ...}`` entry. The published ``config.json``
    must agree with the model built here: same frontend, same number of classes (the class names are
    taken from it); then the weights are loaded strictly.
    """
    repo_id, revision = weights["repo_id"], weights.get("revision")
    files = resolve_files(f"{HF_PREFIX}{repo_id}", revision=revision, **download)
    label = f"{name} ({files.label})"
    config = read_config(files.config, label=label)
    if config["frontend"] != model.frontend_config:
        raise ModelFormatError(
            f"{label}: the published weights expect a different frontend: "
            f"{_differences(config['frontend'], model.frontend_config)}"
        )
    if len(config["classes"]) != model.num_classes:
        raise ModelFormatError(
            f"{label}: the published weights have {len(config['classes'])} classes, the model built here "
            f"{model.num_classes}"
        )
    load_state_strict(model, read_weights(files.weights, label=label), label=label)
    _check_normalization(model, config, label)
    model.classes = list(config["classes"])
    model.metrics = copy.deepcopy(config.get("metrics") or {})
    model.eval()
