"""Synthetic acoustic scenes in the DCASE 2019 layout: the embedded default dataset.

Two tasks, both written as 16-bit stereo WAV files with ``meta.csv`` and ``evaluation_setup/fold1_*``
files, so that they load through ``dcase2019-task1a`` like the real development set:

``scenes``
    Up to 10 classes named after the DCASE scenes. A class is a *background bed* (noise with a class
    spectral tilt, two resonances, a slow level modulation and a stereo width) plus *events* drawn from
    a shared vocabulary of eight sound types with class-specific probabilities and rates. Classes
    overlap on purpose: pairs of classes share similar beds and differ mostly in their events, every
    event type occurs in several classes, and each recording location shifts its bed a little. A small
    CNN learns it in minutes, but not perfectly.

``relational``
    The task of docs/method.md section 11: each clip holds two events of equal level over a constant noise bed,
    each inside the part of a different segment that no other segment covers (segments of the default
    ``dcase-logmel`` frontend), and the two segments do not overlap. The class is ``same`` (one event
    type twice) or ``different`` (two types). Pooled per-segment features cannot separate the classes;
    comparing segments can.

Everything is drawn from ``numpy.random.default_rng([seed, task, clip])``: the output depends on the
seed only, not on the number of worker processes. Recording locations (the ``identifier`` column) never
cross the fold-1 split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from asczoo.atomic import TEMP_SUFFIX, atomic_write_text
from asczoo.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

SCENE_CLASSES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
                 "street_pedestrian", "street_traffic", "tram")
RELATIONAL_CLASSES = ("different", "same")
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
TASKS = ("scenes", "relational")
EVENT_TYPES = ("beep", "chirp_up", "chirp_down", "clicks", "burst", "hum", "babble", "bell")
SAMPLE_RATE = 48000
CLIPS_PER_LOCATION = 6

#: per scene: (spectral tilt, resonance 1 Hz, resonance 2 Hz, modulation Hz, stereo correlation,
#: event rate per 10 s, favourite events). Pairs share beds: metro/tram, street_pedestrian/public_square,
#: airport/shopping_mall, bus/street_traffic; park and metro_station stand more on their own.
_SCENES: dict[str, tuple[float, float, float, float, float, float, tuple[int, ...]]] = {
    "airport": (1.0, 400.0, 2500.0, 0.10, 0.55, 5.0, (0, 6, 7)),
    "bus": (1.6, 150.0, 900.0, 0.40, 0.80, 3.0, (5, 0, 4)),
    "metro": (1.4, 250.0, 1500.0, 0.25, 0.75, 4.0, (1, 2, 5)),
    "metro_station": (1.2, 300.0, 3500.0, 0.15, 0.50, 5.0, (1, 6, 0)),
    "park": (0.6, 3000.0, 6000.0, 0.05, 0.20, 4.0, (7, 3, 6)),
    "public_square": (0.9, 600.0, 3000.0, 0.10, 0.35, 6.0, (6, 3, 4)),
    "shopping_mall": (1.0, 450.0, 2300.0, 0.12, 0.60, 6.0, (6, 7, 0)),
    "street_pedestrian": (0.9, 650.0, 2800.0, 0.10, 0.35, 6.0, (6, 4, 3)),
    "street_traffic": (1.7, 120.0, 800.0, 0.30, 0.45, 6.0, (5, 4, 1)),
    "tram": (1.4, 260.0, 1400.0, 0.25, 0.70, 4.0, (2, 1, 3)),
}


@dataclasses.dataclass
class SynthInfo:
    """What :func:`synthesize` wrote."""

    root: Path
    task: str
    classes: list[str]
    clips: int
    train: int
    evaluate: int


# -- building blocks -----------------------------------------------------------------------------------

def _coloured_noise(rng: np.random.Generator, n: int, rate: int, tilt: float, peaks: Sequence[float],
                    correlation: float) -> np.ndarray:
    """Stereo noise ``(2, n)`` with a 1/f^tilt spectrum, resonances and the given inter-channel correlation."""
    freqs = np.fft.rfftfreq(n, 1.0 / rate).astype(np.float32)
    grid = np.geomspace(20.0, rate / 2, 256)  # the envelope is smooth: compute it coarsely, interpolate
    shape = (grid / 1000.0) ** (-tilt / 2.0)
    for peak in peaks:
        shape = shape * (1.0 + 3.0 * np.exp(-0.5 * (np.log(grid / peak) / 0.25) ** 2))
    shape[grid > 0.45 * rate] *= 0.1
    envelope = np.interp(freqs, grid, shape).astype(np.float32)
    size = freqs.size
    white = rng.standard_normal((6, size), dtype=np.float32)
    common, side = math.sqrt(correlation), math.sqrt(1.0 - correlation)
    spectra = np.empty((2, size), dtype=np.complex64)
    spectra.real = common * white[0] + side * white[1:3]
    spectra.imag = common * white[3] + side * white[4:6]
    out = np.fft.irfft(spectra * envelope, n=n).astype(np.float32)
    return out / (float(np.sqrt(np.mean(out * out))) + 1e-12)


def _event(kind: int, rng: np.random.Generator, rate: int, *, duration: float | None = None,
           jitter: float = 0.05) -> np.ndarray:
    """A mono event of one of the :data:`EVENT_TYPES`, unit RMS."""
    def tone(freqs: Sequence[float], seconds: float, decay: float = 0.0) -> np.ndarray:
        t = (np.arange(int(seconds * rate)) / rate).astype(np.float32)
        x = sum(np.sin(2 * np.pi * fr * t + rng.uniform(0, 2 * np.pi)) / (i + 1) for i, fr in enumerate(freqs))
        return x * np.exp(-decay * t)

    j = 1.0 + rng.uniform(-jitter, jitter)
    if kind == 0:  # beep: harmonic tone burst
        x = tone([1500 * j, 3000 * j, 4500 * j], duration or 0.25)
    elif kind == 1 or kind == 2:  # chirps
        d = duration or 0.5
        t = np.arange(int(d * rate)) / rate
        f0, f1 = (400 * j, 2400 * j) if kind == 1 else (2400 * j, 400 * j)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * d)))
    elif kind == 3:  # clicks: a short train of impulses through a resonator
        d = duration or 0.5
        x = np.zeros(int(d * rate))
        period = int(rate / (15 * j))
        x[::period] = 1.0
        kernel = np.sin(2 * np.pi * 5000 * np.arange(96) / rate) * np.exp(-np.arange(96) / 16)
        x = np.convolve(x, kernel)[: x.size]
    elif kind == 4:  # burst: band-limited noise with a fast decay
        d = duration or 0.3
        n = int(d * rate)
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        spec *= np.exp(-0.5 * (np.log(np.maximum(freqs, 20) / (900 * j)) / 0.4) ** 2)
        x = np.fft.irfft(spec, n=n) * np.exp(-np.arange(n) / (0.08 * rate))
    elif kind == 5:  # hum: low harmonic engine sound
        x = tone([110 * j * k for k in range(1, 7)], duration or 1.5)
    elif kind == 6:  # babble: formant-like harmonics with syllable-rate modulation
        d = duration or 0.8
        t = np.arange(int(d * rate)) / rate
        x = tone([180 * j * k for k in (1, 2, 3, 4, 5, 8, 12)], d) * (0.55 + 0.45 * np.sin(2 * np.pi * 4.5 * t))
    else:  # bell: inharmonic partials, exponential decay
        x = tone([880 * j, 880 * 2.76 * j, 880 * 5.4 * j], duration or 1.0, decay=4.0)
    ramp = min(int(0.01 * rate), x.size // 4)
    if ramp:
        x[:ramp] *= np.linspace(0, 1, ramp)
        x[-ramp:] *= np.linspace(1, 0, ramp)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def _place(out: np.ndarray, event: np.ndarray, start: int, gain: float, pan: float) -> None:
    """Add a mono event to stereo ``out`` at ``start`` with constant-power panning (pan in [-1, 1])."""
    end = min(out.shape[1], start + event.size)
    if end <= start:
        return
    angle = (pan + 1) * np.pi / 4
    out[0, start:end] += gain * np.cos(angle) * event[: end - start]
    out[1, start:end] += gain * np.sin(angle) * event[: end - start]


def _to_int16_range(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = np.abs(x).max() + 1e-12
    level = 10 ** (rng.uniform(-12, -3) / 20)  # clip peak level between -12 and -3 dBFS
    return (x * (level / peak)).astype(np.float32)


# -- the two tasks -------------------------------------------------------------------------------------

def scene_clip(label: int, location: int, rng: np.random.Generator, *, seconds: float, rate: int,
               classes: Sequence[str]) -> np.ndarray:
    """One ``scenes`` clip ``(2, samples)`` of class ``classes[label]`` at recording ``location``."""
    tilt, r1, r2, mod, corr, event_rate, favourites = _SCENES[classes[label]]
    where = np.random.default_rng([7919, label, location])  # the location's own colouring
    tilt += where.uniform(-0.2, 0.2) + rng.uniform(-0.1, 0.1)
    r1 *= where.uniform(0.85, 1.15)
    r2 *= where.uniform(0.85, 1.15)
    corr = float(np.clip(corr + where.uniform(-0.1, 0.1), 0.05, 0.95))
    n = int(round(seconds * rate))
    bed = _coloured_noise(rng, n, rate, tilt, (r1, r2), corr)
    t = (np.arange(n) / rate).astype(np.float32)
    bed *= 1.0 + 0.5 * np.sin(np.float32(2 * np.pi * mod) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    weights = np.full(len(EVENT_TYPES), 0.5)
    for rank, kind in enumerate(favourites):
        weights[kind] += 3.0 - rank
    weights /= weights.sum()
    count = rng.poisson(event_rate * seconds / 10.0)
    for _ in range(count):
        event = _event(int(rng.choice(len(EVENT_TYPES), p=weights)), rng, rate, jitter=0.1)
        start = int(rng.integers(0, max(1, n - event.size // 2)))
        _place(bed, event, start, gain=10 ** (rng.uniform(-12, 3) / 20), pan=rng.uniform(-0.8, 0.8))
    return _to_int16_range(bed, rng)


def relational_segments(seconds: float, rate: int) -> tuple[list[tuple[int, int]], int]:
    """The default frontend's segments over a clip: per segment the sample range that only it covers,
    and the smallest index distance at which two segments share no frame.

    At 10 s and 48 kHz these are the 8 segments of 80 frames (hop 55): exclusive ranges of 30 frames
    (0.64 s) and distance 2. Shorter clips (tests) keep the same layout with shorter segments.
    """
    from asczoo.data.frontend import segment_starts

    hop, segments = max(1, 1024 * rate // SAMPLE_RATE), 8
    total = 1 + int(round(seconds * rate)) // hop
    frames = 80 if total >= 400 else max(2, total // 6)  # short clips: segments keep frames of their own
    starts = segment_starts(total, segments, frames).tolist()
    spans = []
    for s, start in enumerate(starts):
        lo = max(start, starts[s - 1] + frames) if s > 0 else start
        hi = min(start + frames, starts[s + 1]) if s + 1 < segments else start + frames
        spans.append((lo * hop, max(lo, hi - 1) * hop))
    step = max(1, starts[1] - starts[0])
    return spans, -(-frames // step)


def relational_clip(label: int, rng: np.random.Generator, *, seconds: float, rate: int,
                    kinds: int = 6) -> np.ndarray:
    """One ``relational`` clip: label 1 (``same``) holds one event type twice, 0 (``different``) two."""
    n = int(round(seconds * rate))
    bed = 0.3 * _coloured_noise(rng, n, rate, 1.0, (800.0,), 0.5)
    spans, gap = relational_segments(seconds, rate)
    pairs = [(a, b) for a in range(len(spans)) for b in range(a + gap, len(spans))]
    s1, s2 = pairs[int(rng.integers(len(pairs)))]
    first = int(rng.integers(kinds))
    second = first if label == 1 else int((first + rng.integers(1, kinds)) % kinds)
    for kind, (lo, hi) in ((first, spans[s1]), (second, spans[s2])):
        room = hi - lo
        duration = min(0.4, 0.8 * room / rate)
        event = _event(kind, rng, rate, duration=duration, jitter=0.02)
        start = lo + int(rng.integers(0, max(1, room - event.size)))
        _place(bed, event, start, gain=10 ** (rng.uniform(-1, 1) / 20), pan=rng.uniform(-0.3, 0.3))
    return _to_int16_range(bed, rng)


def _make_clip(job: tuple[Any, ...]) -> str:
    """Worker: synthesise and write one clip; returns its path."""
    from asczoo.data.audio import write_audio

    path, task, index, label, location, seed, seconds, rate, classes = job
    rng = np.random.default_rng([seed, TASKS.index(task), index])
    if task == "scenes":
        x = scene_clip(label, location, rng, seconds=seconds, rate=rate, classes=classes)
    else:
        x = relational_clip(label, rng, seconds=seconds, rate=rate)
    write_audio(path, x, rate, subtype="PCM_16", fsync=False)  # re-creatable: skip the per-file disk flush
    return path


# -- the dataset ---------------------------------------------------------------------------------------

#: the tables a synthesis writes besides the audio (relative to the dataset root)
_TABLES = ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv",
           "evaluation_setup/fold1_test.csv")


def _owned_files(root: Path, *, overwrite: bool) -> set[str]:
    """The files of an earlier synthesis in ``root`` (its manifest), after checking that ``root`` holds
    nothing else (unless ``overwrite``); the user's own files are never touched."""
    from asczoo.data.feature_cache import CACHE_DIRNAME

    if not root.exists():
        return set()
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    owned: set[str] = set()
    marker = root / "synth.json"
    if marker.is_file():
        try:
            manifest = json.loads(marker.read_text(encoding="utf-8"))
            files = manifest.get("files") if isinstance(manifest, dict) else None
        except (OSError, ValueError):
            files = None
        if isinstance(files, list):
            owned = {f for f in files if isinstance(f, str) and _is_plain_relative(f)}
    if overwrite:
        return owned
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root).as_posix()
        dirs[:] = sorted(d for d in dirs if not (here == "." and d == CACHE_DIRNAME))  # asczoo's own cache
        for name in sorted(names):
            rel = name if here == "." else f"{here}/{name}"
            if rel != "synth.json" and rel not in owned and not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                why = ("its synth.json has no manifest of the files it wrote" if marker.is_file() and not owned
                       else "it is not a synthetic dataset written by asczoo" if not marker.is_file()
                       else "the file was not written by asczoo synth")
                raise FileExistsError(
                    f"{root} is not empty and holds {rel!r}, which asczoo synth did not write ({why}); "
                    "choose another directory, or pass --overwrite (overwrite=True) to write the synthetic "
                    "dataset into it anyway (its meta.csv and fold lists are replaced; no other file is removed)")
    return owned


def _is_plain_relative(file: str) -> bool:
    """A manifest entry that stays inside the dataset root (no absolute path, no ``..``)."""
    parts = file.split("/")
    return bool(file) and "\\" not in file and all(p not in ("", ".", "..") for p in parts)


#: the sizes a synthetic dataset may have (``asczoo synth`` and a recipe's ``data.synth`` alike), checked
#: before anything is allocated or written: each clip is one ``seconds * sample_rate`` array
MAX_CLIPS, MAX_SECONDS, MAX_WORKERS = 1_000_000, 600.0, 256


def _bounded(key: str, value: Any, low: float, high: float, *, integer: bool = False, low_open: bool = False,
             high_open: bool = False, why: str = "") -> None:
    """Refuse ``value`` unless it is a number (an integer with ``integer``) within ``[low, high]``."""
    kind = "an integer" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        ok = ok and (integer or math.isfinite(value))
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"synth: {key} = {value!r}; expected {kind} in {span}" + (f" ({why})" if why else ""))


def synthesize(
    out_dir: str | Path,
    *,
    clips: int = 400,
    seed: int = 0,
    task: str = "scenes",
    seconds: float = 10.0,
    sample_rate: int = SAMPLE_RATE,
    classes: int | None = None,
    evaluate_fraction: float = 0.3,
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthInfo:
    """Write a synthetic dataset in the DCASE 2019 layout to ``out_dir``; see the module docstring.

    ``classes`` limits the ``scenes`` task to its first K DCASE classes (default 10).

    The generator writes only where it owns the files: into a new or empty directory, or into an
    earlier synthetic dataset whose ``synth.json`` manifest lists every file there (besides the
    manifest itself and asczoo's feature cache). A directory holding any other file is refused with
    :class:`FileExistsError` naming it, unless ``overwrite``; even then only files of the earlier
    manifest are ever removed, never the user's own (which stay where they are, unlisted).
    """
    from asczoo.data.dataset_base import location_split
    from asczoo.data._parallel import ordered_map

    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if task == "scenes":
        count = len(SCENE_CLASSES) if classes is None else classes
        if not 2 <= count <= len(SCENE_CLASSES):
            raise ValueError(f"classes must be between 2 and {len(SCENE_CLASSES)}, got {classes}")
        names = list(SCENE_CLASSES[:count])
    else:
        if classes not in (None, 2):
            raise ValueError("the relational task has exactly 2 classes (same, different)")
        names = list(RELATIONAL_CLASSES)
    _bounded("clips", clips, 2 * len(names), MAX_CLIPS, integer=True,
             why=f"fewer are too few for {len(names)} classes: 2 per class at least")
    _bounded("seconds", seconds, 0.0, MAX_SECONDS, low_open=True)
    _bounded("sample_rate", sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, integer=True)
    _bounded("workers", workers, 0, MAX_WORKERS, integer=True)
    _bounded("evaluate_fraction", evaluate_fraction, 0.0, 1.0, low_open=True, high_open=True)
    root = Path(out_dir)
    previous = _owned_files(root, overwrite=overwrite)

    marker = root / "synth.json"
    rows, jobs = [], []
    per_class = [0] * len(names)
    # several locations per class even for tiny datasets, so that both sides of the split have each class
    per_location = max(1, min(CLIPS_PER_LOCATION, clips // len(names) // 4))
    for i in range(clips):
        label = i % len(names)
        k = per_class[label]
        per_class[label] += 1
        location = k // per_location
        ident_number = label * 1000 + location
        city = CITIES[(label + location) % len(CITIES)]
        identifier = f"{city}-{ident_number}"
        file = f"audio/{names[label]}-{identifier}-{k % per_location}-a.wav"
        rows.append((file, names[label], identifier))
        jobs.append((str(root / file), task, i, label, location, seed, float(seconds), int(sample_rate), tuple(names)))
    written = {file for file, _, _ in rows} | set(_TABLES)
    # until the run is finished the marker is a manifest without options: a killed run can be rerun
    # (every file it may have left is listed), and it never looks like a finished dataset
    atomic_write_text(marker, json.dumps({"generator": "asczoo.synth", "complete": False,
                                          "files": sorted(previous | written)}, indent=2))
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for stale in sorted(previous - written):  # clips of an earlier, larger synthesis (its manifest says so)
        (root / stale).unlink(missing_ok=True)
    for _ in ordered_map(_make_clip, jobs, workers=workers, progress=progress, desc=f"synth {task}", unit="clip"):
        pass

    evaluate = location_split([r[2] for r in rows], [r[1] for r in rows], evaluate_fraction, seed)
    meta = ["filename\tscene_label\tidentifier\tsource_label"] + [f"{f}\t{c}\t{g}\ta" for f, c, g in rows]
    atomic_write_text(root / "meta.csv", "\n".join(meta) + "\n")
    train_rows = [r for r, e in zip(rows, evaluate) if not e]
    eval_rows = [r for r, e in zip(rows, evaluate) if e]
    setup = root / "evaluation_setup"
    for part, items in (("train", train_rows), ("evaluate", eval_rows)):
        text = "\n".join(["filename\tscene_label"] + [f"{f}\t{c}" for f, c, _ in items]) + "\n"
        atomic_write_text(setup / f"fold1_{part}.csv", text)
    atomic_write_text(setup / "fold1_test.csv", "\n".join(["filename"] + [f for f, _, _ in eval_rows]) + "\n")
    atomic_write_text(marker, json.dumps({
        # the arguments of synthesize() as given (so a caller can tell whether a rerun would change
        # anything), then what they resolved to
        "task": task, "clips": clips, "seed": seed, "seconds": seconds, "sample_rate": sample_rate,
        "classes": classes, "evaluate_fraction": evaluate_fraction,
        "class_names": names, "generator": "asczoo.synth", "complete": True,
        # every file this generator wrote (relative, POSIX): a rerun may replace or remove these and
        # nothing else; any other file in the directory is the user's
        "files": sorted(written),
    }, indent=2))
    return SynthInfo(root, task, names, clips, len(train_rows), len(eval_rows))
