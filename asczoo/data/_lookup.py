"""Constructing a dataset plugin's dataset by name: the lookup both ``create_dataset`` and extraction use.

It never touches a feature cache; :func:`asczoo.data.datasets.create_dataset` adds that step.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from asczoo import plugins
from asczoo.interfaces import Frontend
from asczoo.parts import KINDS
from asczoo.recipes.schema import check_arguments

SPLITS = ("train", "evaluate", "test", "all")
#: arguments every dataset factory receives from :func:`create_dataset` itself
HOST_ARGUMENTS = KINDS["dataset"].host_arguments


def construct_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    split: str,
    fold: int | None,
    frontend: Frontend,
    cache_dir: str | os.PathLike | None,
    options: Mapping[str, Any],
) -> Any:
    """Call the factory of dataset plugin ``name`` (``options`` checked against its signature)."""
    if split not in SPLITS:
        raise ValueError(f"dataset {name!r}: split {split!r} is not one of {', '.join(SPLITS)}")
    part = plugins.get_part("dataset", name)
    check_arguments(part.factory, dict(options), where=f"dataset {name!r}", supplied_by_host=HOST_ARGUMENTS)
    return part.factory(str(root), split=split, fold=fold, frontend=frontend,
                        cache_dir=None if cache_dir is None else str(cache_dir), **options)
