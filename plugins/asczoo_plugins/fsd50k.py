"""Dataset plugin ``fsd50k``: FSD50K (Fonseca et al., zenodo.org/record/4060432), multi-label, 200 classes.

Layout as published::

    ROOT/FSD50K.dev_audio/<fname>.wav         variable length (0.3 to 30 s), 44.1 kHz, mono
    ROOT/FSD50K.eval_audio/<fname>.wav
    ROOT/FSD50K.ground_truth/vocabulary.csv   no header: index,label,mid (200 rows)
    ROOT/FSD50K.ground_truth/dev.csv          header fname,labels,mids,split  (split: train or val)
    ROOT/FSD50K.ground_truth/eval.csv         header fname,labels,mids

``labels`` and ``mids`` are comma-separated lists inside one quoted field
(``"Electric_guitar,Guitar,Music"``). Splits: ``train`` is dev's ``train`` rows, ``evaluate`` dev's
``val`` rows (``evaluate_on="eval"``: the evaluation set instead, for the final figure), ``test`` the
evaluation set without labels. Items are multi-hot label vectors in ``vocabulary.csv`` order; the task
is ``multi-label`` (sigmoid outputs, binary cross-entropy, mAP).

Frontend defaults: 44.1 kHz, n_fft 2048, hop 1024, 8 segments of 80 frames over a nominal 10 s: shorter
clips are zero-padded, longer ones have their 8 segments spread over the whole clip (``long_clips:
segment``), so the relation blocks always see 8 ordered parts of the recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from asczoo import hookimpl
from asczoo.data import Problem

from asczoo_plugins.layouts import (
    MULTI_LABEL, LayoutError, attach, finish, missing_rows, prepare_root, raise_problems, read_rows, row_problem,
    tone_clip, write_clip, write_table,
)

TRUTH = "FSD50K.ground_truth"
FRONTEND = {"plugin": "dcase-logmel", "sample_rate": 44100, "n_fft": 2048, "hop_length": 1024, "n_mels": 128,
            "segments": 8, "segment_frames": 80, "clip_seconds": 10.0}

Split = Literal["train", "evaluate", "test", "all"]


def read_vocabulary(base: Path) -> list[str]:
    path = base / TRUTH / "vocabulary.csv"
    rows = read_rows(path, columns=("index", "label", "mid"), delimiter=",", header=False, dataset="fsd50k")
    problems, labels = [], []
    for expected, (line, row) in enumerate(rows):
        if row["index"] != str(expected):
            problems.append(row_problem(path, line, f"index {row['index']!r}; expected {expected} (rows in index "
                                                    "order, no header: index,label,mid)"))
        labels.append(row["label"])
    raise_problems(problems, "dataset 'fsd50k'")
    if not labels:
        raise LayoutError(f"{path}: empty; expected one row per class (index,label,mid)",
                          [Problem(str(path), "empty-split", "no classes")])
    return labels


def _read_truth(base: Path, table: str, vocabulary: set[str], *, with_split: bool
                ) -> list[tuple[str, list[str], str, int]]:
    path = base / TRUTH / table
    columns = ("fname", "labels", "mids", "split") if with_split else ("fname", "labels", "mids")
    rows = read_rows(path, columns=columns, delimiter=",", dataset="fsd50k")
    audio = "FSD50K.dev_audio" if with_split else "FSD50K.eval_audio"
    problems, out = [], []
    for line, row in rows:
        labels = [x for x in row["labels"].split(",") if x]
        unknown = [x for x in labels if x not in vocabulary]
        if not row["fname"].isdigit():
            problems.append(row_problem(path, line, f"fname {row['fname']!r}; expected the clip's number "
                                                    f"(the audio is {audio}/<fname>.wav)"))
        elif not labels:
            problems.append(row_problem(path, line, "no labels; expected a quoted, comma-separated label list"))
        elif unknown:
            problems.append(row_problem(path, line, f"label(s) {', '.join(map(repr, unknown))} not in vocabulary.csv",
                                        kind="unknown-label"))
        elif len(row["mids"].split(",")) != len(labels):
            problems.append(row_problem(path, line, f"{len(labels)} labels but {len(row['mids'].split(','))} mids; "
                                                    "expected one mid per label (is the labels field quoted?)"))
        elif with_split and row["split"] not in ("train", "val"):
            problems.append(row_problem(path, line, f"split {row['split']!r}; expected train or val"))
        else:
            out.append((f"{audio}/{row['fname']}.wav", labels, row.get("split", "eval"), line))
    raise_problems(problems, "dataset 'fsd50k'")
    return out


def fsd50k(
    root: str,
    *,
    split: Split = "train",
    fold: int | None = 1,
    frontend: Any = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    evaluate_on: Literal["val", "eval"] = "val",
) -> Any:
    """FSD50K, multi-label (200 classes): train on dev/train, evaluate on dev/val (or the eval set)."""
    base = Path(root)
    if fold not in (1, None):
        raise LayoutError(f"dataset 'fsd50k': fold {fold} does not exist; FSD50K has one split (dev train/val, eval)",
                          [Problem(str(base), "missing-setup", f"no fold {fold}")])
    classes = read_vocabulary(base)
    known = set(classes)
    dev = _read_truth(base, "dev.csv", known, with_split=True)
    parts = {"train": [r for r in dev if r[2] == "train"], "val": [r for r in dev if r[2] == "val"]}
    if split in ("test", "all") or evaluate_on == "eval":
        parts["eval"] = _read_truth(base, "eval.csv", known, with_split=False)
    chosen = {"train": parts["train"], "evaluate": parts[evaluate_on], "test": parts.get("eval", []),
              "all": dev + parts.get("eval", [])}[split]
    targets = {f: labels for f, labels, _, _ in chosen}
    listing = [(f, None, f) for f, _, _, _ in chosen]
    sources = {"train": "dev.csv (train)", "val": "dev.csv (val)", "eval": "eval.csv"}
    source = {"train": sources["train"], "evaluate": sources[evaluate_on], "test": sources["eval"],
              "all": "dev.csv + eval.csv"}[split]
    bad = missing_rows(base, [(f, base / TRUTH / ("eval.csv" if s == "eval" else "dev.csv"), line)
                              for f, _, s, line in chosen])
    return finish(name="fsd50k", root=base, split=split, listing=listing, classes=classes, frontend=frontend,
                  cache_dir=cache_dir, skip_bad=skip_bad, source=f"{TRUTH}/{source}",
                  identity={"fold": 1, "options": {"evaluate_on": evaluate_on}}, bad=bad,
                  targets=None if split == "test" else targets,
                  origins=[f"{base / TRUTH / ('eval.csv' if s == 'eval' else 'dev.csv')}, line {line}"
                           for _, _, s, line in chosen])


def synth_fsd50k(root: str | Path, *, clips: int = 120, seed: int = 0, overwrite: bool = False,
                 sample_rate: int = 44100, classes: int = 6) -> dict[str, Any]:
    """A small synthetic FSD50K: ``classes`` labels, one to three per clip, lengths 0.5 to 3 s."""
    base = prepare_root(root, overwrite)
    rng = np.random.default_rng(seed)
    vocabulary = [(i, f"Sound_{i}", f"/m/syn{i:03d}") for i in range(classes)]
    write_table(base / TRUTH / "vocabulary.csv", None, vocabulary, ",")
    dev, evaluation = [], []
    for i in range(clips):
        count = 1 + i % 3
        labels = sorted({(i + 2 * j) % classes for j in range(count)})
        seconds = 0.5 + (i % 6) * 0.5
        names = ",".join(vocabulary[k][1] for k in labels)
        mids = ",".join(vocabulary[k][2] for k in labels)
        held = i % 5 == 4
        folder = "FSD50K.eval_audio" if held else "FSD50K.dev_audio"
        write_clip(base / folder / f"{i}.wav", tone_clip(labels, rng, seconds=seconds, rate=sample_rate), sample_rate)
        if held:
            evaluation.append((i, names, mids))
        else:
            dev.append((i, names, mids, "val" if i % 5 == 3 else "train"))
    write_table(base / TRUTH / "dev.csv", ("fname", "labels", "mids", "split"), dev, ",")
    write_table(base / TRUTH / "eval.csv", ("fname", "labels", "mids"), evaluation, ",")
    return {"root": str(base), "clips": clips}


attach(fsd50k, frontend_defaults=FRONTEND, folds=(1,), task=MULTI_LABEL, synthesize=synth_fsd50k, channels=1,
       layout="fsd50k")


@hookimpl
def asczoo_register_datasets(register):
    register("fsd50k", fsd50k)
