"""``asczoo.finetune(MODEL, data=ROOT)``: a trained model, a new head for a dataset's classes, one command.

Fine-tuning is the registered training recipe ``finetune`` (``plugins/asczoo_plugins/training_recipes/
own_data.yaml``: SGD, lr 0.01, cosine decay over 15 epochs, the best epoch kept) run by the same
:func:`asczoo.training.runs.train` as every other recipe. What this module adds is the parent: it
reads the parent's ``config.json`` (a saved folder, ``org/name`` or ``hf-hub:org/name[@revision]``,
downloaded into the Hugging Face cache) and sets the recipe's one stage to the parent's architecture,
recipe options and frontend, with ``init_from`` naming the parent. The stage then builds the model for
the dataset's classes, copies the parent's backbone, relation blocks and normalisation statistics (the
head too when the classes are the same: :func:`asczoo.models.build.initialise_from`), and trains every
layer. The run is a normal run directory (report, confusion matrix, ``model/`` with a model card whose
``base_model`` names a Hub parent), resumable with ``resume=True``.

The user's ``--set`` keys apply on top (``stages.finetune.epochs=30``,
``stages.finetune.overrides.frontend.n_mels=64``, ``data.options.evaluate_fraction=0.2``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

#: the registered training recipe fine-tuning runs, and its one stage
RECIPE, STAGE = "finetune", "finetune"


def parent_overrides(model: str | os.PathLike, *, revision: str | None = None, dataset: str | None = None,
                     ) -> dict[str, Any]:
    """The ``finetune`` recipe's overrides that make ``model`` its parent: the stage's ``model``,
    ``overrides`` (the parent's recipe and frontend), ``unit`` and ``init_from``; ``data.dataset`` when
    ``dataset`` is given."""
    from asczoo.data.datasets import dataset_defaults
    from asczoo.hub.files import STORED_AT_TOP, read_config, resolve_files
    from asczoo.names import HUB, REGISTRY, parse_model_name
    from asczoo.recipes import model_recipes

    text = os.fspath(model)
    parsed = parse_model_name(text, revision)
    if parsed.kind == REGISTRY:
        raise ValueError(f"finetune: {text!r} is a registry name, not a trained model; give a saved model folder, "
                         "org/name or hf-hub:org/name (to train a registry model from scratch: asczoo train)")
    files = resolve_files(text, revision=revision)
    config = read_config(files.config, label=files.label)
    if config.get("quantization"):
        raise ValueError(f"finetune: {files.label} holds {config['quantization'].get('scheme', 'quantised')} weights "
                         "for inference; fine-tune the float model it was quantised from")
    name = config["name"]
    if name not in model_recipes.registry().entries:
        raise ValueError(f"finetune: {files.label} is a {name!r} model, which no loaded plugin registers; install the "
                         "plugin that provides it (`asczoo plugins` lists the loaded ones)")
    overrides = {k: v for k, v in config["recipe"].items() if k not in STORED_AT_TOP}
    overrides["frontend"] = dict(config["frontend"])
    if dataset is not None:
        overrides["task"] = dataset_defaults(dataset)["task"]  # the head is new: it follows the data
    # the parent as the user named it, so the run's record and model card name it (a Hub id stays an id;
    # the engine resolves it through the Hugging Face cache); a local folder as its absolute path
    if parsed.kind == HUB:
        init_from = f"hf-hub:{parsed.name}" + (f"@{parsed.revision}" if parsed.revision else "")
    else:
        init_from = str(Path(files.weights).parent.resolve())
    segments = (config.get("input_shape") or [0])[0]
    stage = {"model": name, "overrides": overrides, "init_from": init_from,
             "unit": "segment" if segments == 1 else "clip"}
    out: dict[str, Any] = {"stages": {STAGE: stage}}
    if dataset is not None:
        out["data"] = {"dataset": dataset}
    return out


def finetune_overrides(model: str | os.PathLike, *, revision: str | None = None, dataset: str | None = None,
                       overrides: Mapping[str, Any] | Sequence[str] | None = None) -> dict[str, Any]:
    """What :func:`finetune` merges into the ``finetune`` recipe: :func:`parent_overrides`, then the
    user's ``--set`` strings or nested mapping over them."""
    from asczoo.recipes.merge import merge
    from asczoo.recipes.overrides import parse_overrides

    merged = parent_overrides(model, revision=revision, dataset=dataset)
    if overrides:
        user = parse_overrides(list(overrides)) if isinstance(overrides, (list, tuple)) else dict(overrides)
        merged = merge(merged, user)
    return merged


def finetune(
    model: str | os.PathLike,
    *,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    dataset: str | None = None,
    revision: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    resume: bool = False,
    **train_options: Any,
):
    """Fine-tune ``model`` on the dataset at ``data`` and return the :class:`~asczoo.training.runs.TrainResult`.

    Args:
        model: the parent: a saved model folder, ``org/name`` or ``hf-hub:org/name[@revision]``.
        data: the dataset root.
        out: the run directory (default ``runs/finetune-TIMESTAMP``).
        dataset: the dataset plugin (default ``folder``: class sub-folders or a labels table).
        revision: a Hub branch, tag or commit of the parent.
        overrides: ``--set`` strings or a nested mapping over the recipe (they win over the parent's).
        resume: continue the run in ``out``.
        train_options: passed on to :func:`asczoo.training.runs.train` (``callbacks``, ``log``, ...).
    """
    from asczoo.training.runs import train

    merged = finetune_overrides(model, revision=revision, dataset=dataset, overrides=overrides)
    return train(RECIPE, data=data, out=out, resume=resume, overrides=merged, **train_options)
