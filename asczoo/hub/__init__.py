"""Saved model folders and the Hugging Face Hub: an I/O layer that never builds a model.

:mod:`asczoo.hub.files` finds, downloads, reads and writes ``config.json`` and ``model.safetensors``
and uploads folders; :mod:`asczoo.hub.card` writes model cards. Building a model from those files is
:mod:`asczoo.models.pretrained`'s (``asczoo.from_pretrained``), publishing a training run
:mod:`asczoo.training.publish`'s.
"""

from __future__ import annotations

import importlib
from typing import Any

from asczoo.hub.files import (
    CARD_NAME, CONFIG_NAME, CONFUSION_NAME, FORMAT_VERSION, HF_PREFIX, PICKLE_SUFFIXES, REPORT_NAME, WEIGHTS_NAME,
    ModelFiles, ModelFormatError, UnsafeWeightsError, model_config, publishable_files, push_to_hub, read_config,
    read_weights, resolve_files, save_pretrained, upload_folder,
)

__all__ = [
    "CARD_NAME", "CONFIG_NAME", "CONFUSION_NAME", "FORMAT_VERSION", "HF_PREFIX", "PICKLE_SUFFIXES", "REPORT_NAME",
    "WEIGHTS_NAME", "ModelFiles", "ModelFormatError", "UnsafeWeightsError", "model_config", "publishable_files",
    "push_to_hub", "read_config", "read_weights", "resolve_files", "save_pretrained", "upload_folder",
]

#: names ``asczoo.hub`` offered before models were built elsewhere; still found here, by name only,
#: so that this package imports nothing that builds a model
_MOVED = {
    "from_pretrained": "asczoo.models.pretrained",
    "load_pretrained": "asczoo.models.pretrained",
    "build_from_config": "asczoo.models.pretrained",
    "load_registry_weights": "asczoo.models.pretrained",
    "load_state_strict": "asczoo.models.pretrained",
    "load_model": "asczoo.models.factory",
    "find_run_files": "asczoo.training.publish",
    "publish_run": "asczoo.training.publish",
    "RunFiles": "asczoo.training.publish",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'asczoo.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
