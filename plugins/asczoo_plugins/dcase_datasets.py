"""Dataset plugins: the DCASE 2019 and 2018 Task 1a development sets, and ``folder`` for one's own data.

``dcase2019-task1a`` / ``dcase2018-task1a`` read the development-set layout (docs/method.md section 9)::

    ROOT/audio/*.wav
    ROOT/meta.csv                          filename, scene_label, identifier, source_label (tab-separated)
    ROOT/evaluation_setup/fold1_train.csv  filename, scene_label  (2018: fold1_train.txt)
    ROOT/evaluation_setup/fold1_evaluate.csv
    ROOT/evaluation_setup/fold1_test.csv   filename

Both accept ``.csv`` and ``.txt`` setup files (2019 tries ``.csv`` first, 2018 ``.txt``), tab or
comma separated, with or without a header. The class list is the sorted set of ``scene_label`` values
in ``meta.csv`` (or of the fold's train and evaluate lists when there is no meta.csv). ``fold=None``
ignores the setup files and splits ``meta.csv`` by recording location (``identifier``) instead.

``folder`` reads a user's data: a table ``labels.tsv`` / ``labels.csv`` (or ``labels=PATH``) with a
file and a label column and optionally a location column, or else one sub-folder per class. It has no
fixed folds: ``train`` and ``evaluate`` come from a location-keeping random split (``evaluate_fraction``,
``seed`` and ``fold`` pick it), ``test`` is the evaluation side without labels.

File paths in ``dataset.files`` are as listed, relative to ``root``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

from asczoo import hookimpl
from asczoo.data import (
    AudioError, ClipDataset, DataError, Problem, audio_info, find_setup_file, is_audio_file, location_of,
    location_split, read_labelled_lines,
)

Split = Literal["train", "evaluate", "test", "all"]


def _dcase(
    name: str, root: str, *, split: str, fold: int | None, frontend: Any, cache_dir: str | None,
    skip_bad: bool, evaluate_fraction: float, seed: int, classes: list[str] | None,
    extensions: Sequence[str],
) -> ClipDataset:
    base = Path(root)
    given_classes = classes
    meta_path = base / "meta.csv"
    # rows are (file, label, where it was read: "FILE, line N"), the origins ClipDataset names
    meta = ([(f, label, g, f"{meta_path}, line {n}") for f, label, g, n in read_labelled_lines(meta_path)]
            if meta_path.is_file() else None)
    location = {f: (g or location_of(f)) for f, _, g, _ in meta} if meta else {}

    meta_labels = {f: label for f, label, _, _ in meta or [] if label}
    list_problems: list[Problem] = []  # rows of the fold lists that cannot be used as they are

    def listed(part: str) -> tuple[list[tuple[str, str | None, str]], str]:
        path = find_setup_file(base, fold, part, extensions)
        rows = [(f, label, f"{path}, line {n}") for f, label, _, n in read_labelled_lines(path)]
        source = str(path.relative_to(base))
        if part in ("train", "evaluate"):
            list_problems.extend(_check_fold_list([(f, label) for f, label, _ in rows], path, source, meta_labels))
        return rows, source

    if fold is None:
        if meta is None:
            raise DataError(f"{meta_path}: not found; fold=None splits meta.csv by location and needs it",
                            [Problem(str(meta_path), "missing-setup", "not found (needed for fold=None)")])
        rows = [(f, label, where) for f, label, _, where in meta]
        source = "meta.csv"
        if split != "all":
            evaluate = location_split([location[f] for f, _, _ in rows], [lab for _, lab, _ in rows],
                                      evaluate_fraction, seed)
            rows = [r for r, e in zip(rows, evaluate) if e == (split != "train")]
            if split == "test":
                rows = [(f, None, where) for f, _, where in rows]
    elif split == "all":
        train, train_src = listed("train")
        evaluate, eval_src = listed("evaluate")
        rows = [(f, label, where) for f, label, _, where in meta] if meta else []
        have = {f for f, _, _ in rows}
        try:
            test = [(f, None, where) for f, _, where in listed("test")[0]]
        except DataError:  # a fold without a test list
            test = []
        for f, label, where in train + evaluate + test:  # files of the fold that meta.csv does not list
            if f not in have:
                rows.append((f, label, where))
                have.add(f)
        source = " + ".join(["meta.csv"] * bool(meta) + [train_src, eval_src])
    else:
        rows, source = listed(split)
        if split == "test":
            rows = [(f, None, where) for f, _, where in rows]
    if classes is None:
        if meta:
            labels = {label for _, label, _, _ in meta if label}
        else:
            labels = {label for part in ("train", "evaluate") for _, label, _ in listed(part)[0] if label}
        classes = sorted(labels)
    if not classes:
        raise DataError(f"dataset {name!r} at {root}: no class labels found in meta.csv or the setup files",
                        [Problem(str(meta_path), "missing-setup", "no class labels found")])
    listing = [(f, label, location.get(f) or location_of(f)) for f, label, _ in rows]
    return ClipDataset(
        name=name, root=root, split=split, listing=listing, classes=classes, frontend=frontend,
        cache_dir=cache_dir, skip_bad=skip_bad, source=source, problems=list_problems,
        origins=[where for _, _, where in rows],
        identity={"fold": fold, "options": _options(evaluate_fraction, seed, classes=given_classes)},
    )


def _check_fold_list(rows: list[tuple[str, str | None]], path: Path, source: str,
                     meta_labels: dict[str, str]) -> list[Problem]:
    """The rows of a labelled fold list (train or evaluate) that would train on something else than meant:
    a row without a label, or a label that contradicts ``meta.csv``. An empty list is refused outright."""
    if not rows:
        raise DataError(f"{path}: the list is empty; expected one labelled file per line",
                        [Problem(str(path), "missing-setup", f"{source} is empty (no files listed)")])
    problems = []
    for file, label in rows:
        if label is None:
            problems.append(Problem(file, "no-label", f"listed in {source} without a label (expected a "
                                                      "scene_label column in a training or evaluation list)"))
        elif file in meta_labels and meta_labels[file] != label:
            problems.append(Problem(file, "label-conflict", f"label {label!r} in {source} but "
                                                            f"{meta_labels[file]!r} in meta.csv"))
    return problems


def _options(evaluate_fraction: float, seed: int, **more: Any) -> dict[str, Any]:
    """The list-defining options, as recorded in a cache manifest (and passed back on re-extraction)."""
    out: dict[str, Any] = {"evaluate_fraction": evaluate_fraction, "seed": seed}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


def dcase2019_task1a(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    evaluate_fraction: float = 0.3,
    seed: int = 0,
    classes: list[str] | None = None,
) -> ClipDataset:
    """TAU Urban Acoustic Scenes 2019 development set (DCASE 2019 Task 1a), fold 1 by default.

    ``evaluate_fraction`` and ``seed`` only matter with ``fold=None`` (a location-keeping split of
    meta.csv); ``classes`` overrides the class list read from the metadata.
    """
    return _dcase("dcase2019-task1a", root, split=split, fold=fold, frontend=frontend, cache_dir=cache_dir,
                  skip_bad=skip_bad, evaluate_fraction=evaluate_fraction, seed=seed, classes=classes,
                  extensions=(".csv", ".txt"))


def dcase2018_task1a(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    evaluate_fraction: float = 0.3,
    seed: int = 0,
    classes: list[str] | None = None,
) -> ClipDataset:
    """TUT Urban Acoustic Scenes 2018 development set (DCASE 2018 Task 1a), fold 1 by default.

    Same options as ``dcase2019-task1a``; the setup files are ``fold1_*.txt`` (``.csv`` also works).
    """
    return _dcase("dcase2018-task1a", root, split=split, fold=fold, frontend=frontend, cache_dir=cache_dir,
                  skip_bad=skip_bad, evaluate_fraction=evaluate_fraction, seed=seed, classes=classes,
                  extensions=(".txt", ".csv"))


def folder(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    labels: str | None = None,
    evaluate_fraction: float = 0.3,
    seed: int = 0,
    group_pattern: str | None = None,
    classes: list[str] | None = None,
) -> ClipDataset:
    """A user's own clips: a file/label table (``labels.tsv``, ``labels.csv`` or ``labels=``) or class sub-folders.

    Locations come from the table's ``identifier``/``location`` column, else from ``group_pattern`` (a
    regular expression on the file stem; its ``location`` or first group), else from DCASE-style names;
    a file whose location cannot be told is its own location. ``fold`` offsets ``seed``, so folds 1, 2,
    ... are different random location-keeping splits.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"folder dataset: {root} is not a directory",
                        [Problem(str(root), "missing-setup", "not a directory")])
    table = Path(labels) if labels is not None else None
    if table is not None and not table.is_absolute():
        table = base / table
    if table is None:
        table = next((base / n for n in ("labels.tsv", "labels.csv") if (base / n).is_file()), None)
    where: list[str] | None = None  # "FILE, line N" of each row, for ClipDataset's messages
    if table is not None:
        lines = read_labelled_lines(table)
        rows = [(f, label, g) for f, label, g, _ in lines]
        where = [f"{table}, line {n}" for *_, n in lines]
        source = table.name
    else:
        rows = []
        for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            rows += [(f.relative_to(base).as_posix(), sub.name, None)
                     for f in sorted(sub.rglob("*")) if f.is_file() and is_audio_file(f)]
        source = "class sub-folders"
        if not rows:
            raise DataError(f"folder dataset at {root}: no labels.tsv/labels.csv and no class sub-folders with "
                            f"audio files (.wav, .flac)",
                            [Problem(str(root), "missing-setup", "no label table and no class sub-folders")])
    unlabelled = [f for f, label, _ in rows if label is None]
    if unlabelled:
        raise DataError(f"{table}: {len(unlabelled)} row(s) without a label, e.g. {unlabelled[0]!r}",
                        [Problem(f, "missing-setup", f"no label in {source}") for f in unlabelled])
    classes = sorted({label for _, label, _ in rows}) if classes is None else list(classes)
    groups = [g or location_of(f, group_pattern) for f, _, g in rows]
    listing = [(f, label, g) for (f, label, _), g in zip(rows, groups)]
    if split != "all":
        evaluate = location_split(groups, [label for _, label, _ in rows], evaluate_fraction,
                                  seed + (fold or 1) - 1)
        listing = [r for r, e in zip(listing, evaluate) if e == (split != "train")]
        where = None if where is None else [w for w, e in zip(where, evaluate) if e == (split != "train")]
        if split == "test":
            listing = [(f, None, g) for f, _, g in listing]
    return ClipDataset(
        name="folder", root=root, split=split, listing=listing, classes=classes, frontend=frontend,
        cache_dir=cache_dir, skip_bad=skip_bad, source=source, origins=where,
        identity={"fold": fold, "options": _options(evaluate_fraction, seed, labels=labels,
                                                    group_pattern=group_pattern, classes=classes)},
    )


#: the paper's frontend at 48 kHz: 469 frames of a 10 s clip, segments of 80 of them
_PAPER_FRAMES, _PAPER_SEGMENT_FRAMES = 469, 80


def folder_frontend(root: str | Path, **options: Any) -> dict[str, Any]:
    """The ``dcase-logmel`` settings that suit the recordings in a ``folder`` dataset, from their headers.

    The sample rate and channel count most of the clips have, and the longest clip's length (shorter ones
    are zero-padded, longer ones are not in a well-formed folder); an FFT of about 40 ms (the next power
    of two: 2048 at 44.1-48 kHz, 1024 at 16-24 kHz), a hop of half of it, shortened (down to an eighth)
    until a clip has at least 160 frames, 128 mel bands from an FFT of 2048 (64 below), and 8 segments
    that keep the paper's proportion of 80 of 469 frames. Unreadable files are left out here
    (``check-data`` names them); with none readable the plugin's defaults stand ({}).
    """
    from collections import Counter

    listing = folder(root, split="all", **{k: v for k, v in options.items() if k in ("labels", "classes")})
    infos = []
    for clip in listing.entries:
        try:
            infos.append(audio_info(clip.path))
        except AudioError:
            continue
    if not infos:
        return {}
    rates = Counter(info.sample_rate for info in infos)
    rate = max(rates, key=lambda r: (rates[r], r))
    channels = Counter(min(info.channels, 2) for info in infos)
    mono = channels[1] > channels[2]
    longest = max(info.frames * rate / info.sample_rate for info in infos)
    clip_seconds = min(max(round(longest / rate, 6), 0.1), 600.0)
    n_fft = 1 << max(6, math.ceil(math.log2(0.04 * rate)))
    hop = n_fft // 2
    while hop > n_fft // 8 and 1 + int(round(clip_seconds * rate)) // hop < 160:
        hop //= 2
    frames = 1 + int(round(clip_seconds * rate)) // hop
    segment_frames = max(4, min(_PAPER_SEGMENT_FRAMES, round(frames * _PAPER_SEGMENT_FRAMES / _PAPER_FRAMES)))
    config = {"plugin": "dcase-logmel", "sample_rate": rate, "n_fft": n_fft, "hop_length": hop,
              "n_mels": 128 if n_fft >= 2048 else 64, "segments": 8, "segment_frames": min(segment_frames, frames),
              "clip_seconds": clip_seconds}
    if mono:
        config["channels"] = 1
    return config


folder.frontend_for = folder_frontend


@hookimpl
def asczoo_register_datasets(register):
    register("dcase2019-task1a", dcase2019_task1a)
    register("dcase2018-task1a", dcase2018_task1a)
    register("folder", folder)
