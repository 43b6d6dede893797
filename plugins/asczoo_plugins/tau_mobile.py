"""Dataset plugins ``tau2020-mobile`` and ``tau2022-mobile``: the TAU Urban Acoustic Scenes Mobile sets.

``tau2020-mobile``: TAU Urban Acoustic Scenes 2020 Mobile, development set (DCASE 2020 Task 1a)::

    ROOT/audio/<scene>-<city>-<location>-<segment>-<device>.wav   10 s, 44.1 kHz, mono
    ROOT/meta.csv                          tab-separated, header: filename scene_label identifier source_label
    ROOT/evaluation_setup/fold1_train.csv  tab-separated, header: filename scene_label
    ROOT/evaluation_setup/fold1_evaluate.csv                       filename scene_label
    ROOT/evaluation_setup/fold1_test.csv                           filename

``tau2022-mobile``: TAU Urban Acoustic Scenes 2022 Mobile, development set (DCASE 2022 to 2025 Task 1),
1 s clips (``<scene>-<city>-<location>-<segment>-<part>-<device>.wav``), the same ``meta.csv``, and the
DCASE 2024 training subsets as the DCASE 2024 baseline lays them out::

    ROOT/split_setup/split5.csv split10.csv split25.csv split50.csv split100.csv   filename scene_label
    ROOT/split_setup/test.csv              the development test split (used for validation)

``subset`` (5, 10, 25, 50 or 100 per cent) picks the training list; ``evaluate`` and ``test`` are
``test.csv`` (with and without labels).

Devices: ``source_label`` (the file name's last part) is the recording device: a (the binaural
recorder of the 2019 set), b, c (phones) and s1 to s6 (simulated). s4 to s6 appear only in the
evaluation split: they are the *unseen* devices of the DCASE per-device report. The dataset's
``device_of`` (file -> device) and ``unseen_devices`` feed that report (training and ``asczoo eval``).

A 2019 ``meta.csv`` (device a only) or a ``meta.csv`` without ``source_label`` is refused with the file,
the line and the expected form, as is every setup-file row that names a clip meta.csv does not list,
a clip not on disk, or a scene label outside the ten scenes.

Frontend defaults (``frontend_defaults``; the model's saved config carries them):

* 2020, 10 s at 44.1 kHz: n_fft 2048, hop 1024 -> 431 frames, 8 segments of 80 frames (1.9 s) with a
  hop of 50 frames: the paper's layout (469 frames at 48 kHz), so relation blocks see the same number of
  overlapping, ordered segments as in the paper;
* 2022, 1 s at 44.1 kHz: hop 256 -> 173 frames, 8 segments of 32 frames (0.19 s) with a hop of 20:
  still 8 ordered segments (the relation layer's set of points) over the short clip, each long enough
  for the ResNet's 32x time reduction to leave one frame.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np

from asczoo import hookimpl
from asczoo.data import Problem

from asczoo_plugins.layouts import (
    SINGLE_LABEL, LayoutError, attach, device_attributes, finish, missing_rows, prepare_root, raise_problems,
    read_rows, row_problem, tone_clip, write_clip, write_table,
)

SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
SEEN = ("a", "b", "c", "s1", "s2", "s3")
UNSEEN = ("s4", "s5", "s6")
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
SUBSETS = (5, 10, 25, 50, 100)

FRONTEND_2020 = {"plugin": "dcase-logmel", "sample_rate": 44100, "n_fft": 2048, "hop_length": 1024, "n_mels": 128,
                 "segments": 8, "segment_frames": 80, "clip_seconds": 10.0}
FRONTEND_2022 = {"plugin": "dcase-logmel", "sample_rate": 44100, "n_fft": 2048, "hop_length": 256, "n_mels": 128,
                 "segments": 8, "segment_frames": 32, "clip_seconds": 1.0}

Split = Literal["train", "evaluate", "test", "all"]


def read_meta(root: Path, name: str) -> dict[str, dict[str, Any]]:
    """``meta.csv`` -> ``{filename: {label, identifier, device, line}}``; refuses other releases' layouts."""
    path = root / "meta.csv"
    rows = read_rows(path, columns=META_COLUMNS, delimiter="\t", dataset=name)
    problems, out = [], {}
    for line, row in rows:
        file, label, device = row["filename"], row["scene_label"], row["source_label"]
        stem = Path(file).stem
        if not file.startswith("audio/") or not file.endswith(".wav"):
            problems.append(row_problem(path, line, f"filename {file!r}; expected audio/<scene>-...-<device>.wav"))
        elif device not in DEVICES:
            problems.append(row_problem(path, line, f"source_label {device!r}; expected a device of {name}: "
                                                    f"{', '.join(DEVICES)}"))
        elif stem.rsplit("-", 1)[-1] != device:
            problems.append(row_problem(path, line, f"source_label {device!r} but the file name {file!r} ends in "
                                                    f"device {stem.rsplit('-', 1)[-1]!r}"))
        elif label not in SCENES:
            problems.append(row_problem(path, line, f"scene_label {label!r} is not one of the ten scenes "
                                                    f"({', '.join(SCENES)})", kind="unknown-label"))
        elif file in out:
            problems.append(row_problem(path, line, f"{file!r} is listed again (first on line {out[file]['line']})",
                                        kind="duplicate"))
        else:
            out[file] = {"label": label, "identifier": row["identifier"], "device": device, "line": line}
    raise_problems(problems, f"dataset {name!r}: {path}")
    if not out:
        raise LayoutError(f"{path}: no clips listed; expected one row per clip",
                          [Problem(str(path), "empty-split", "no clips listed")])
    devices = Counter(v["device"] for v in out.values())
    if set(devices) <= {"a"}:
        message = (f"every clip is from device 'a' ({devices['a']} clips): this is a single-device meta.csv "
                   f"(TAU 2019/2018 Task 1a layout); {name} expects the Mobile release's devices "
                   f"{', '.join(DEVICES)} in source_label")
        raise LayoutError(f"{path}: {message}", [Problem(str(path), "layout", message)])
    return out


def read_list(root: Path, relative: str, meta: dict[str, dict[str, Any]], name: str, *,
              labelled: bool) -> tuple[list[tuple[str, str | None, int]], list[Problem], Path]:
    """A setup list ``(file, label or None, line)`` checked against ``meta.csv``; and its bad rows."""
    path = root / relative
    columns = ("filename", "scene_label") if labelled else ("filename",)
    rows = read_rows(path, columns=columns, delimiter="\t", dataset=name, required=("filename",))
    out, bad = [], []
    for line, row in rows:
        file, label = row["filename"], row.get("scene_label") or None
        known = meta.get(file)
        if known is None:
            bad.append(Problem(file, "layout", f"listed in {path} line {line} but not in meta.csv"))
        elif label is not None and label not in SCENES:
            bad.append(Problem(file, "unknown-label", f"{path} line {line}: scene_label {label!r} is not one of "
                                                      f"{', '.join(SCENES)}"))
        elif label is not None and label != known["label"]:
            bad.append(Problem(file, "layout", f"{path} line {line}: scene_label {label!r} but meta.csv line "
                                               f"{known['line']} says {known['label']!r}"))
        out.append((file, label if labelled else None, line))
    if not out:
        raise LayoutError(f"{path}: the list is empty; expected one row per clip after the header",
                          [Problem(str(path), "empty-split", "no clips listed")])
    return out, bad, path


def _dataset(name: str, root: str, *, split: str, fold: int | None, frontend: Any, cache_dir: str | None,
             skip_bad: bool, lists: dict[str, tuple[str, bool]], identity: dict[str, Any]) -> Any:
    base = Path(root)
    if fold not in (1, None):
        raise LayoutError(f"dataset {name!r}: fold {fold} does not exist; the development set has fold 1 only",
                          [Problem(str(base), "missing-setup", f"no fold {fold} (fold 1 only)")])
    meta = read_meta(base, name)
    parts = ("train", "evaluate", "test") if split == "all" else (split,)
    # (file, label, line, list): a file repeated within one list stays repeated, so the base refuses
    # it as a duplicate (naming both lines) like every other reader; with split "all" a clip in
    # several lists (test.csv is the evaluation list without labels) is the dataset's once
    rows: list[tuple[str, str | None, int, Path]] = []
    part_of: dict[str, str] = {}
    bad: list[Problem] = []
    sources = []
    for part in parts:
        relative, labelled = lists[part]
        listed, problems, path = read_list(base, relative, meta, name, labelled=labelled)
        bad += [p for p in problems if p not in bad]
        sources.append(relative)
        for file, label, line in listed:
            device = meta.get(file, {}).get("device")
            if part == "train" and device in UNSEEN:
                bad.append(Problem(file, "layout", f"{base / relative} line {line}: a training clip from device "
                                                   f"{device!r}; {name} keeps {', '.join(UNSEEN)} for evaluation "
                                                   "only (unseen devices)"))
            if split == "all":
                label = meta.get(file, {}).get("label", label)
            if part_of.setdefault(file, part) == part:
                rows.append((file, label, line, path))
    if split == "all":  # clips meta.csv lists outside the setup lists are still the dataset's
        for file, info in meta.items():
            if part_of.setdefault(file, "meta") == "meta":
                rows.append((file, info["label"], info["line"], base / "meta.csv"))
    bad += [p for p in missing_rows(base, [(f, src, line) for f, _, line, src in rows]) if p not in bad]
    listing = [(f, label, meta.get(f, {}).get("identifier") or f) for f, label, _, _ in rows]
    dataset = finish(name=name, root=base, split=split, listing=listing, classes=list(SCENES), frontend=frontend,
                     cache_dir=cache_dir, skip_bad=skip_bad, source=" + ".join(sources), identity=identity, bad=bad,
                     origins=[f"{src}, line {line}" for _, _, line, src in rows])
    return device_attributes(dataset, {f: v["device"] for f, v in meta.items()}, UNSEEN)


def tau2020_mobile(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> Any:
    """TAU Urban Acoustic Scenes 2020 Mobile development set (DCASE 2020 Task 1a), fold 1; 9 devices."""
    lists = {"train": ("evaluation_setup/fold1_train.csv", True),
             "evaluate": ("evaluation_setup/fold1_evaluate.csv", True),
             "test": ("evaluation_setup/fold1_test.csv", False)}
    return _dataset("tau2020-mobile", root, split=split, fold=fold, frontend=frontend, cache_dir=cache_dir,
                    skip_bad=skip_bad, lists=lists, identity={"fold": 1, "options": {}})


def tau2022_mobile(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    subset: int = 100,
) -> Any:
    """TAU Urban Acoustic Scenes 2022 Mobile development set, 1 s clips; ``subset``: DCASE 2024 split5 ... split100."""
    if subset not in SUBSETS:
        raise ValueError(f"tau2022-mobile: subset {subset!r} is not a DCASE 2024 training subset; expected one of "
                         f"{', '.join(map(str, SUBSETS))} (split_setup/split<N>.csv)")
    lists = {"train": (f"split_setup/split{subset}.csv", True), "evaluate": ("split_setup/test.csv", True),
             "test": ("split_setup/test.csv", False)}
    return _dataset("tau2022-mobile", root, split=split, fold=fold, frontend=frontend, cache_dir=cache_dir,
                    skip_bad=skip_bad, lists=lists, identity={"fold": 1, "options": {"subset": subset}})


# -- synthetic datasets in these layouts ---------------------------------------------------------------------

def _synth(root: str | Path, *, clips: int, seed: int, seconds: float, rate: int, year: int,
           overwrite: bool) -> dict[str, Any]:
    base = prepare_root(root, overwrite)
    rng = np.random.default_rng(seed)
    meta, train, evaluate = [], [], []
    for i in range(clips):
        scene = i % len(SCENES)
        block = i // len(SCENES)  # one clip of every scene per block
        device = DEVICES[block % len(DEVICES)]
        location = (block + block // len(DEVICES)) % 3  # every device at several locations
        city = CITIES[location]
        identifier = f"{city}-{location}"
        parts = [SCENES[scene], city, str(location), str(i)] + (["0"] if year == 2022 else []) + [device]
        file = f"audio/{'-'.join(parts)}.wav"
        write_clip(base / file, tone_clip(scene, rng, seconds=seconds, rate=rate), rate)
        meta.append((file, SCENES[scene], identifier, device))
        # unseen devices and one location in three go to evaluation; no location straddles
        held_out = device in UNSEEN or location % 3 == 2
        (evaluate if held_out else train).append((file, SCENES[scene]))
    if not evaluate or not train:
        raise ValueError(f"{clips} clips are too few for both splits; use at least {2 * len(SCENES) * len(DEVICES)}")
    write_table(base / "meta.csv", META_COLUMNS, meta, "\t")
    if year == 2020:
        write_table(base / "evaluation_setup" / "fold1_train.csv", ("filename", "scene_label"), train, "\t")
        write_table(base / "evaluation_setup" / "fold1_evaluate.csv", ("filename", "scene_label"), evaluate, "\t")
        write_table(base / "evaluation_setup" / "fold1_test.csv", ("filename",), [(f,) for f, _ in evaluate], "\t")
    else:
        for subset in SUBSETS:  # nested subsets, as the DCASE 2024 splits are
            keep = train[: max(len(SCENES), len(train) * subset // 100)]
            write_table(base / "split_setup" / f"split{subset}.csv", ("filename", "scene_label"), keep, "\t")
        write_table(base / "split_setup" / "test.csv", ("filename", "scene_label"), evaluate, "\t")
    return {"root": str(base), "clips": clips, "train": len(train), "evaluate": len(evaluate)}


def synth_tau2020(root: str | Path, *, clips: int = 200, seed: int = 0, overwrite: bool = False,
                  seconds: float = 10.0, sample_rate: int = 44100) -> dict[str, Any]:
    """A small synthetic TAU 2020 Mobile development set (all nine devices, fold 1)."""
    return _synth(root, clips=clips, seed=seed, seconds=seconds, rate=sample_rate, year=2020, overwrite=overwrite)


def synth_tau2022(root: str | Path, *, clips: int = 200, seed: int = 0, overwrite: bool = False,
                  seconds: float = 1.0, sample_rate: int = 44100) -> dict[str, Any]:
    """A small synthetic TAU 2022 Mobile development set (1 s clips, DCASE 2024 split_setup)."""
    return _synth(root, clips=clips, seed=seed, seconds=seconds, rate=sample_rate, year=2022, overwrite=overwrite)


attach(tau2020_mobile, frontend_defaults=FRONTEND_2020, folds=(1,), task=SINGLE_LABEL, synthesize=synth_tau2020,
       channels=1, layout="tau2020-mobile")
attach(tau2022_mobile, frontend_defaults=FRONTEND_2022, folds=(1,), task=SINGLE_LABEL, synthesize=synth_tau2022,
       channels=1, layout="tau2022-mobile")


@hookimpl
def asczoo_register_datasets(register):
    register("tau2020-mobile", tau2020_mobile)
    register("tau2022-mobile", tau2022_mobile)
