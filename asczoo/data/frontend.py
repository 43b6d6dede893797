"""Building audio frontends by name, and the segmenting rule they share.

A frontend turns a waveform into the model's input ``(N, 3, F, T)`` (see
:class:`asczoo.interfaces.Frontend`). Frontends are plugins; this module only looks them up, checks
their arguments and makes sure that what comes back honours the interface. A frontend's ``config``
names its plugin and every setting, so ``create_frontend(**frontend.config)`` rebuilds it exactly:
that is how a model's frontend travels with its weights and how a feature cache is keyed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch

from asczoo import plugins
from asczoo.recipes.schema import check_arguments
from asczoo.interfaces import Frontend

DEFAULT_FRONTEND = "dcase-logmel"


def create_frontend(name: str | None = None, **config: Any) -> Frontend:
    """Build the frontend plugin ``name`` (default ``dcase-logmel``) with ``config`` as its options.

    ``config`` may carry ``plugin`` (as a frontend's own ``config`` does), so
    ``create_frontend(**fe.config)`` rebuilds ``fe``. Unknown options and values of the wrong type are
    refused with a message naming the option.
    """
    if name is not None and not isinstance(name, str):  # create_frontend(model.frontend_config)
        keys = f" with keys {', '.join(map(str, name))}" if isinstance(name, Mapping) else ""
        shown = f"a {type(name).__name__}{keys}"
        raise TypeError(f"create_frontend: the first argument is the plugin name (a str), got {shown}; "
                        "to rebuild a frontend from its config, unpack it: create_frontend(**config)")
    plugin = config.pop("plugin", None)
    if name is not None and plugin is not None and name != plugin:
        raise ValueError(f"create_frontend: name {name!r} and config plugin {plugin!r} disagree")
    name = name or plugin or DEFAULT_FRONTEND
    part = plugins.get_part("frontend", name)
    check_arguments(part.factory, config, where=f"frontend {name!r}")
    frontend = part.factory(**config)
    if not isinstance(frontend, Frontend):
        raise TypeError(f"frontend plugin {name!r} returned {type(frontend).__name__}, not an asczoo Frontend")
    if frontend.config.get("plugin") != name:
        raise TypeError(f"frontend plugin {name!r}: its config must contain plugin={name!r}")
    return frontend


def resolve_frontend(spec: Frontend | Mapping[str, Any] | str | None) -> Frontend:
    """A frontend from an instance, a config mapping, a plugin name, or None (the default frontend)."""
    if isinstance(spec, Frontend):
        return spec
    if spec is None:
        return create_frontend()
    if isinstance(spec, str):
        return create_frontend(spec)
    if isinstance(spec, Mapping):
        return create_frontend(**dict(spec))
    raise TypeError(f"expected a Frontend, a config mapping or a plugin name, got {type(spec).__name__}")


def config_key(config: Mapping[str, Any], *extra: Any) -> str:
    """A short stable hash of a frontend config (plus ``extra`` values): names feature caches."""
    blob = json.dumps([dict(config), *extra], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def segment_starts(total_frames: int, segments: int, segment_frames: int) -> torch.Tensor:
    """First frame of each of ``segments`` windows of ``segment_frames`` over ``total_frames`` frames.

    The paper's rule (docs/method.md section 2): segment ``s`` starts at ``s * floor((T - frames) / (N - 1))``, so
    the segments are in temporal order and overlap when the clip is short (T = 469, N = 8, 80 frames:
    hop 55). With ``N = 1`` the rule is undefined; the single segment is centred. ``T`` must be at
    least ``segment_frames`` (frontends pad short clips first).
    """
    if total_frames < segment_frames:
        raise ValueError(f"{total_frames} frames cannot hold a segment of {segment_frames} frames")
    if segments == 1:
        return torch.tensor([(total_frames - segment_frames) // 2])
    hop = (total_frames - segment_frames) // (segments - 1)
    return torch.arange(segments) * hop
