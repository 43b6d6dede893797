"""Saved model folders and the Hugging Face Hub.

Re-exports only; see :mod:`asczoo.hub.files` (folders, config.json, weights, uploads) and
:mod:`asczoo.hub.card` (model cards).
"""

from asczoo.hub.files import (
    CARD_NAME, CONFIG_NAME, CONFUSION_NAME, FORMAT_VERSION, HF_PREFIX, PICKLE_SUFFIXES, REPORT_NAME, WEIGHTS_NAME,
    ModelFiles, ModelFormatError, RunFiles, UnsafeWeightsError, find_run_files, from_pretrained, load_model,
    load_pretrained, load_registry_weights, model_config, publish_run, publishable_files, push_to_hub, read_config,
    read_weights, resolve_files, save_pretrained, upload_folder,
)

__all__ = [
    "CARD_NAME", "CONFIG_NAME", "CONFUSION_NAME", "FORMAT_VERSION", "HF_PREFIX", "PICKLE_SUFFIXES", "REPORT_NAME",
    "WEIGHTS_NAME", "ModelFiles", "ModelFormatError", "RunFiles", "UnsafeWeightsError", "find_run_files",
    "from_pretrained", "load_model", "load_pretrained", "load_registry_weights", "model_config", "publish_run",
    "publishable_files", "push_to_hub", "read_config", "read_weights", "resolve_files", "save_pretrained",
    "upload_folder",
]
