"""Datasets by name: look the dataset plugin up, build it, extract its feature cache when asked.

``create_dataset(name, root, split=..., fold=..., frontend=..., cache_dir=...)`` looks the dataset
plugin up and returns a :class:`~asczoo.data.dataset_base.ClipDataset`: a torch ``Dataset`` of
``(features, label)`` with ``features`` float32 ``(N, 3, F, T)`` and ``label`` the class index (-1 in
the unlabelled test split).

Splits: ``train``, ``evaluate`` (labelled), ``test`` (the evaluation files without labels) and ``all``
(every file the dataset knows, labelled where it can be; feature extraction and ``check-data`` use it).

Without ``cache_dir`` features are computed from the audio on every access; with it they are read
from the feature cache (:mod:`asczoo.data.feature_cache`), which is built first if it does not cover the
dataset's files yet. Bad inputs (:mod:`asczoo.data.checks`) raise :class:`DataError` by default;
``skip_bad=True`` leaves them out and lists them in ``dataset.skipped``. Without a cache that means
reading every file once when the dataset is first used, so prefer a cache for large datasets.

What plugins build on (the base class, table readers, splits) is :mod:`asczoo.data.dataset_base`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from asczoo import plugins
from asczoo.data import feature_cache
from asczoo.data._lookup import SPLITS, construct_dataset  # noqa: F401 - re-exported
from asczoo.data.frontend import resolve_frontend
from asczoo.interfaces import Frontend

if TYPE_CHECKING:
    from asczoo.data.dataset_base import ClipDataset

__all__ = ["SPLITS", "create_dataset", "dataset_defaults"]


def create_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    split: str = "train",
    fold: int | None = 1,
    frontend: Frontend | Mapping[str, Any] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> "ClipDataset":
    """The dataset plugin ``name`` over the data at ``root``.

    ``split``: ``train``, ``evaluate``, ``test`` or ``all``. ``fold``: the development-set fold (None
    makes a location-keeping split of its own, see the plugin's options). ``frontend``: a frontend, its
    config or None (``dcase-logmel`` defaults). ``cache_dir``: read features from a feature cache there.
    ``options`` go to the plugin (checked against its signature), e.g. ``skip_bad=True``.
    """
    if frontend is None:
        frontend = dataset_defaults(name, root, **options)["frontend"] or None
    fe = resolve_frontend(frontend)
    dataset = construct_dataset(name, root, split=split, fold=fold, frontend=fe, cache_dir=cache_dir, options=options)
    if cache_dir is not None and getattr(dataset, "needs_extraction", False):
        # No complete cache covers its files yet: extract what its identity names, then attach.
        identity = dataset.identity
        feature_cache.extract(identity["dataset"], identity["root"], fold=identity.get("fold"), frontend=fe,
                              cache_dir=cache_dir, skip_bad=bool(options.get("skip_bad", False)), progress=False,
                              **dict(identity.get("options", {})))
        dataset.attach_cache()
    return dataset


def dataset_defaults(name: str, root: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
    """What a dataset plugin says about itself, from attributes of its factory (all optional):

    ``frontend``: ``frontend_defaults``, the frontend settings that suit its clips (sample rate, clip
    length, segment layout; the training loop merges them under a recipe's own, and a dataset built
    without a frontend uses them); with ``root``, a plugin whose clips are not known in advance (the
    ``folder`` plugin) computes them from the data there by ``frontend_for(root, **options)``, which
    may set ``channels`` too; ``folds``: its official folds (``asczoo cv`` trains each); ``task``:
    ``single-label`` or ``multi-label``; ``synthesize``: a writer of a small dataset in its layout
    (``asczoo synth --layout NAME``), or None; ``channels``: the channel count of its clips when they
    all have the same (``check-data`` warns about others), or None.
    """
    factory = plugins.get_part("dataset", name).factory
    frontend = dict(getattr(factory, "frontend_defaults", None) or {})
    channels = getattr(factory, "channels", None)
    from_data = getattr(factory, "frontend_for", None)
    if root is not None and callable(from_data):
        found = dict(_frontend_for(from_data, os.fspath(root), options) or {})
        frontend.update(found)
        channels = found.get("channels", 2) if found else channels
    return {
        "frontend": frontend,
        "folds": tuple(getattr(factory, "folds", None) or ()),
        "task": str(getattr(factory, "task", None) or "single-label"),
        "synthesize": getattr(factory, "synthesize", None),
        "channels": channels,
    }


def _frontend_for(from_data: Any, root: str, options: Mapping[str, Any]) -> Mapping[str, Any]:
    """``from_data(root, **options)``; nothing when there is no dataset at ``root`` (yet): the listing's
    own error comes when the dataset is opened."""
    from asczoo.data.checks import DataError

    try:
        return from_data(root, **options)
    except DataError:
        return {}
