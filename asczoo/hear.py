"""The HEAR 2021 common API for any saved asczoo model, under the module name the HEAR tools are given.

``hear-validator asczoo.hear -m path/to/saved-model`` and ``heareval`` import a module by name and call
its three functions; that name is ``asczoo.hear``. The implementation is :mod:`asczoo.deploy.hear`,
beside asczoo's other deployment tools; this module is its public address.
"""

from asczoo.deploy.hear import (  # noqa: F401
    BATCH_SIZE, HEAR_SAMPLE_RATES, TIMESTAMP_HOP_MS, HearModel, get_scene_embeddings, get_timestamp_embeddings,
    load_model,
)

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "HearModel", "TIMESTAMP_HOP_MS",
           "BATCH_SIZE", "HEAR_SAMPLE_RATES"]
