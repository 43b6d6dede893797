"""Saved model folders and the Hugging Face Hub: an I/O layer that never builds a model.

:mod:`asczoo.hub.files` finds, downloads, reads and writes ``config.json`` and ``model.safetensors``
and uploads folders; :mod:`asczoo.hub.card` writes model cards. Building a model from those files is
:mod:`asczoo.models.pretrained`'s (``asczoo.from_pretrained``), publishing a training run
:mod:`asczoo.training.publish`'s.
"""

from __future__ import annotations

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
