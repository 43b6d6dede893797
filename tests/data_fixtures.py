"""Tiny datasets in the DCASE development layouts, generated on the spot (no downloads).

Import from tests: ``from data_fixtures import make_dcase_tree, TINY_FRONTEND``. Audio is short and
at a low rate so that everything built on it stays fast; ``TINY_FRONTEND`` matches it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

TINY_FRONTEND = {"plugin": "dcase-logmel", "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32,
                 "segments": 4, "segment_frames": 24, "clip_seconds": 1.0}
CLASSES = ("airport", "bus", "park")


@pytest.fixture(autouse=False)
def one_thread():
    """Run a test with one torch thread: the tiny tensors here gain nothing from more, and on a busy
    machine two threads waiting for each other make each call about a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clip_name(scene: str, city: str, location: int, segment: int) -> str:
    return f"audio/{scene}-{city}-{location}-{segment}-a.wav"


def write_clip(path: Path, seed: int, *, seconds: float = 1.0, rate: int = 8000, channels: int = 2,
               tone: float = 500.0, subtype: str = "PCM_16") -> None:
    """A deterministic noisy tone, stereo by default."""
    import soundfile as sf  # here, not at the top: GPU-only machines may lack libsndfile
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    base = 0.2 * np.sin(2 * math.pi * tone * t)
    data = np.stack([base + 0.05 * rng.standard_normal(n) for _ in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)


def make_dcase_tree(
    root: Path,
    *,
    year: int = 2019,
    header: bool = True,
    classes: Sequence[str] = CLASSES,
    locations: int = 3,
    segments: int = 2,
    seconds: float = 1.0,
    rate: int = 8000,
    meta: bool = True,
) -> dict[str, list[str]]:
    """Write a development set: ``audio/``, ``meta.csv`` and ``evaluation_setup/fold1_*``.

    ``year`` 2019 writes ``.csv`` setup files, 2018 ``.txt``; ``header`` toggles the header lines. Each
    class has ``locations`` recording locations of ``segments`` clips; the last location of every class
    is the evaluation side. Returns ``{"train": [...], "evaluate": [...], "labels": {...}}``-like lists.
    """
    root = Path(root)
    ext = ".csv" if year == 2019 else ".txt"
    cities = ["barcelona", "helsinki", "lisbon", "london"]
    train, evaluate, rows = [], [], []
    seed = 0
    for c, scene in enumerate(classes):
        for loc in range(locations):
            city = cities[loc % len(cities)]
            for seg in range(segments):
                name = clip_name(scene, city, loc, seg)
                write_clip(root / name, seed, seconds=seconds, rate=rate, tone=300.0 + 400.0 * c)
                seed += 1
                rows.append((name, scene, f"{city}-{loc}", "a"))
                (evaluate if loc == locations - 1 else train).append((name, scene))
    if meta:
        lines = (["filename\tscene_label\tidentifier\tsource_label"] if header else [])
        lines += ["\t".join(r) for r in rows]
        (root / "meta.csv").write_text("\n".join(lines) + "\n")
    setup = root / "evaluation_setup"
    setup.mkdir(parents=True, exist_ok=True)
    for part, items in (("train", train), ("evaluate", evaluate)):
        lines = (["filename\tscene_label"] if header else []) + [f"{f}\t{s}" for f, s in items]
        (setup / f"fold1_{part}{ext}").write_text("\n".join(lines) + "\n")
    test_lines = (["filename"] if header else []) + [f for f, _ in evaluate]
    (setup / f"fold1_test{ext}").write_text("\n".join(test_lines) + "\n")
    return {"train": [f for f, _ in train], "evaluate": [f for f, _ in evaluate],
            "labels": {f: s for f, s, _, _ in rows}}
