"""Recipe overrides that make any registry model small enough for a CPU unit test."""

from __future__ import annotations

import copy
from typing import Any

#: Narrow stage widths and a 32-band, 4 x 24-frame input from a 2-second, 8 kHz clip.
TINY_OVERRIDES: dict[str, Any] = {
    "backbone": {"channels": [8, 16, 32, 64], "stem_width": 8},
    "frontend": {
        "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32,
        "segments": 4, "segment_frames": 24, "clip_seconds": 2.0,
    },
}


def tiny_overrides(**sections: Any) -> dict[str, Any]:
    """``TINY_OVERRIDES`` with extra sections merged in, e.g. ``tiny_overrides(relation={"k": 2})``."""
    from asczoo.recipes.model_recipes import deep_merge

    return deep_merge(copy.deepcopy(TINY_OVERRIDES), sections)
