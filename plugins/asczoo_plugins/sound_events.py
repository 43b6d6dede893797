"""Dataset plugins ``esc50`` and ``urbansound8k``: environmental-sound classification with official folds.

``esc50`` (Piczak, ESC-50, github.com/karolpiczak/ESC-50)::

    ROOT/audio/<fold>-<src_file>-<take>-<target>.wav      5 s, 44.1 kHz, mono
    ROOT/meta/esc50.csv     comma-separated, header: filename fold target category esc10 src_file take

Five folds; ``fold K`` evaluates on fold K and trains on the other four (the official protocol, folds as
published: clips cut from one source recording, ``src_file``, share a fold, so none straddles train and
test; a table where one does is refused). ``esc10=True`` keeps the ESC-10 subset (``esc10`` is
``True``), 10 classes. Classes are the ``category`` names in ``target`` order.

``urbansound8k`` (Salamon et al., UrbanSound8K)::

    ROOT/audio/fold1 ... fold10/<fsID>-<classID>-<occurrenceID>-<sliceID>.wav   up to 4 s, many rates, mono/stereo
    ROOT/metadata/UrbanSound8K.csv   comma-separated, header: slice_file_name fsID start end salience fold classID class

The official 10-fold protocol only (never random splits: slices of one recording would leak): ``fold
K`` evaluates on fold K. Sample rates and channel counts vary from file to file; the frontend resamples
to its own rate and duplicates mono (stereo keeps both sides, so the L-R channel carries the difference).

Frontend defaults (carried in the model's saved config):

* ESC-50, 5 s at 44.1 kHz: n_fft 2048, hop 512 -> 431 frames, 8 segments of 80 frames (0.93 s) with a hop
  of 50: the paper's 8 ordered, overlapping segments, each about one sound event long;
* UrbanSound8K, up to 4 s: 44.1 kHz, hop 512 -> 345 frames (shorter slices are zero-padded), 8 segments
  of 64 frames (0.74 s) with a hop of 40.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asczoo import hookimpl
from asczoo.data import Problem

from asczoo_plugins.layouts import (
    SINGLE_LABEL, LayoutError, attach, finish, missing_rows, prepare_root, raise_problems, read_rows,
    row_problem, tone_clip, write_clip, write_table,
)

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
US8K_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                "gun_shot", "jackhammer", "siren", "street_music")

FRONTEND_ESC50 = {"plugin": "dcase-logmel", "sample_rate": 44100, "n_fft": 2048, "hop_length": 512, "n_mels": 128,
                  "segments": 8, "segment_frames": 80, "clip_seconds": 5.0}
FRONTEND_US8K = {"plugin": "dcase-logmel", "sample_rate": 44100, "n_fft": 2048, "hop_length": 512, "n_mels": 128,
                 "segments": 8, "segment_frames": 64, "clip_seconds": 4.0}

Split = Literal["train", "evaluate", "test", "all"]


def _int(path: Path, line: int, column: str, value: str, problems: list[Problem], low: int, high: int) -> int | None:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        problems.append(row_problem(path, line, f"{column} {value!r}; expected an integer from {low} to {high}"))
        return None
    return number


def _fold_listing(name: str, base: Path, split: str, fold: int | None, folds: int,
                  rows: list[tuple[str, str, int, str, int]], classes: list[str], source: Path,
                  cache_dir: str | None, frontend: Any, skip_bad: bool, options: dict[str, Any]) -> Any:
    """``rows``: (file, label, fold, group, line). Fold K evaluates, the others train."""
    if fold is None or not 1 <= fold <= folds:
        raise LayoutError(f"dataset {name!r}: fold {fold!r} is not an official fold; expected 1 to {folds} "
                          f"(--fold K, or `asczoo cv` for all)",
                          [Problem(str(source), "missing-setup", f"no fold {fold!r}")])
    if split == "train":
        chosen = [r for r in rows if r[2] != fold]
    elif split in ("evaluate", "test"):
        chosen = [r for r in rows if r[2] == fold]
    else:
        chosen = list(rows)
    listing = [(f, None if split == "test" else label, group) for f, label, _, group, _ in chosen]
    bad = missing_rows(base, [(f, source, line) for f, _, _, _, line in chosen])
    part = f"{source.relative_to(base)} (fold {fold} {'held out' if split != 'train' else 'excluded'})"
    return finish(name=name, root=base, split=split, listing=listing, classes=classes, frontend=frontend,
                  cache_dir=cache_dir, skip_bad=skip_bad, source=part,
                  identity={"fold": fold, "options": options}, bad=bad,
                  origins=[f"{source}, line {line}" for *_, line in chosen])


def esc50(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    esc10: bool = False,
) -> Any:
    """ESC-50 (2,000 5 s clips, 50 classes, 5 official folds); ``esc10=True``: the ESC-10 subset."""
    base = Path(root)
    path = base / "meta" / "esc50.csv"
    rows = read_rows(path, columns=ESC50_COLUMNS, delimiter=",", dataset="esc50")
    problems: list[Problem] = []
    names: dict[int, tuple[str, int]] = {}
    folds_of: dict[str, dict[int, int]] = defaultdict(dict)
    out = []
    for line, row in rows:
        fold_k = _int(path, line, "fold", row["fold"], problems, 1, 5)
        target = _int(path, line, "target", row["target"], problems, 0, 49)
        flag = row["esc10"]
        if flag not in ("True", "False"):
            problems.append(row_problem(path, line, f"esc10 {flag!r}; expected True or False"))
        if not row["filename"].endswith(".wav") or "/" in row["filename"]:
            problems.append(row_problem(path, line, f"filename {row['filename']!r}; expected a name like "
                                                    "1-100032-A-0.wav (the clip is audio/<filename>)"))
        if fold_k is None or target is None or flag not in ("True", "False"):
            continue
        category = row["category"]
        if target in names and names[target][0] != category:
            problems.append(row_problem(path, line, f"target {target} is category {category!r} here but "
                                                    f"{names[target][0]!r} on line {names[target][1]}"))
            continue
        names.setdefault(target, (category, line))
        folds_of[row["src_file"]][fold_k] = line
        if esc10 and flag != "True":
            continue
        out.append((f"audio/{row['filename']}", category, fold_k, row["src_file"], line))
    for src, where in folds_of.items():  # the official folds keep a source recording in one fold
        if len(where) > 1:
            lines = ", ".join(f"fold {k} (line {ln})" for k, ln in sorted(where.items()))
            problems.append(Problem(str(path), "fold-leak", f"src_file {src!r} is in several folds: {lines}; "
                                                            "expected every clip of a source recording in one fold"))
    raise_problems(problems, "dataset 'esc50'")
    classes = [names[t][0] for t in sorted(names) if not esc10 or any(r[1] == names[t][0] for r in out)]
    return _fold_listing("esc50", base, split, fold, 5, out, classes, path, cache_dir, frontend, skip_bad,
                         {"esc10": esc10} if esc10 else {})


def urbansound8k(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> Any:
    """UrbanSound8K (8,732 slices up to 4 s, 10 classes), the official 10-fold protocol."""
    base = Path(root)
    path = base / "metadata" / "UrbanSound8K.csv"
    rows = read_rows(path, columns=US8K_COLUMNS, delimiter=",", dataset="urbansound8k")
    problems: list[Problem] = []
    out = []
    for line, row in rows:
        fold_k = _int(path, line, "fold", row["fold"], problems, 1, 10)
        class_id = _int(path, line, "classID", row["classID"], problems, 0, 9)
        if class_id is None or fold_k is None:
            continue
        if row["class"] != US8K_CLASSES[class_id]:
            problems.append(row_problem(path, line, f"class {row['class']!r} with classID {class_id}; expected "
                                                    f"{US8K_CLASSES[class_id]!r} (classID order: "
                                                    f"{', '.join(US8K_CLASSES)})", kind="unknown-label"))
            continue
        out.append((f"audio/fold{fold_k}/{row['slice_file_name']}", row["class"], fold_k, row["fsID"], line))
    raise_problems(problems, "dataset 'urbansound8k'")
    return _fold_listing("urbansound8k", base, split, fold, 10, out, list(US8K_CLASSES), path, cache_dir,
                         frontend, skip_bad, {})


# -- synthetic datasets in these layouts ---------------------------------------------------------------------

def synth_esc50(root: str | Path, *, clips: int = 100, seed: int = 0, overwrite: bool = False,
                seconds: float = 5.0, sample_rate: int = 44100, classes: int = 10) -> dict[str, Any]:
    """A small synthetic ESC-50: ``classes`` categories (every other one in ESC-10), 5 folds, two takes
    of each source recording in one fold."""
    base = prepare_root(root, overwrite)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(clips):
        target = (i // 2) % classes  # the two takes of a source recording share class and fold
        src = 100000 + i // 2
        fold = 1 + (i // (2 * classes)) % 5
        take = "AB"[i % 2]
        name = f"{fold}-{src}-{take}-{target}.wav"
        write_clip(base / "audio" / name, tone_clip(target, rng, seconds=seconds, rate=sample_rate), sample_rate)
        rows.append((name, fold, target, f"class_{target:02d}", str(target % 2 == 0), src, take))
    write_table(base / "meta" / "esc50.csv", ESC50_COLUMNS, rows, ",")
    return {"root": str(base), "clips": clips}


def synth_urbansound8k(root: str | Path, *, clips: int = 100, seed: int = 0, overwrite: bool = False,
                       seconds: float = 4.0, sample_rate: int = 44100) -> dict[str, Any]:
    """A small synthetic UrbanSound8K: 10 folds, mixed sample rates (44.1, 48, 22.05 kHz), mono and stereo,
    slices of 1 s up to ``seconds``."""
    base = prepare_root(root, overwrite)
    rng = np.random.default_rng(seed)
    rates = (sample_rate, 48000, 22050)
    rows = []
    for i in range(clips):
        class_id = i % 10
        fold = 1 + (i // 10) % 10
        fs_id = 1000 + i
        rate = rates[i % 3]
        length = seconds if i % 4 else max(1.0, seconds / 2)
        name = f"{fs_id}-{class_id}-0-{i % 3}.wav"
        wave = tone_clip(class_id, rng, seconds=length, rate=rate, channels=1 + i % 2)
        write_clip(base / "audio" / f"fold{fold}" / name, wave, rate)
        rows.append((name, fs_id, 0.0, length, 1, fold, class_id, US8K_CLASSES[class_id]))
    write_table(base / "metadata" / "UrbanSound8K.csv", US8K_COLUMNS, rows, ",")
    return {"root": str(base), "clips": clips}


attach(esc50, frontend_defaults=FRONTEND_ESC50, folds=range(1, 6), task=SINGLE_LABEL, synthesize=synth_esc50,
       channels=1, layout="esc50")
attach(urbansound8k, frontend_defaults=FRONTEND_US8K, folds=range(1, 11), task=SINGLE_LABEL,
       synthesize=synth_urbansound8k, layout="urbansound8k", channels=None)


@hookimpl
def asczoo_register_datasets(register):
    register("esc50", esc50)
    register("urbansound8k", urbansound8k)
