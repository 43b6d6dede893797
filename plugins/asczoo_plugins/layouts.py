"""What the dataset plugins of the field (TAU Mobile, ESC-50, UrbanSound8K, FSD50K) share.

* :func:`read_rows`: a published metadata table read exactly as published (its delimiter, its header
  row with its column names), every row checked for its field count; problems name the file, the line
  and the expected form.
* :func:`missing_rows`: listed clips that are not on disk, each named with the list and the line.
* :func:`finish`: builds the :class:`~asczoo.data.ClipDataset` (or :class:`MultiLabelClips`) once the
  rows are read: with ``skip_bad`` the bad rows are left out and listed in ``dataset.skipped``,
  otherwise one :class:`DataError` names them all, before any audio is read or any cache written.
* :class:`MultiLabelClips`: clips with several labels each; ``labels`` and items are multi-hot.
* :func:`write_tone_clip`: the synthetic clips of ``asczoo synth --layout NAME`` (one tone pattern per
  class plus noise, so that a tiny model can learn them in a few epochs).

A dataset factory carries, as attributes, what the host reads about the dataset without building it:
``frontend_defaults`` (the frontend settings that suit its clips; the training loop puts them under the
recipe's own), ``folds`` (the official folds, for ``asczoo cv``), ``task`` (``single-label`` or
``multi-label``), ``channels`` (1 for the mono sets; None for UrbanSound8K's mixed files) and
``synthesize(root, *, clips, seed)`` (a small dataset in its layout).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from asczoo.data import ClipDataset, DataError, Problem, normalise_listed, place_listed

SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"


class LayoutError(DataError):
    """A metadata file does not have the published layout (missing, wrong header, bad rows)."""


def read_rows(path: Path, *, columns: Sequence[str], delimiter: str, header: bool = True,
              dataset: str, required: Sequence[str] | None = None) -> list[tuple[int, dict[str, str]]]:
    """``(line number, {column: value})`` of a published table; raises :class:`LayoutError` naming the
    file and line of everything that disagrees with the layout.

    ``columns``: the published column names in order (with ``header``, the file's first row must hold
    at least the ``required`` ones, default all, in any order; without, rows are read in this order).
    Quoted fields (FSD50K's comma-separated label lists) are read as one field.
    """
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LayoutError(f"{shown}: not found; dataset {dataset!r} expects it in its published layout",
                          [Problem(shown, "missing-setup", "not found")]) from None
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{shown}: not a UTF-8 text file ({exc.reason})",
                          [Problem(shown, "missing-setup", f"not a UTF-8 text file ({exc.reason})")]) from None
    lines = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    numbered = [(i, row) for i, row in enumerate(lines, start=1) if any(field.strip() for field in row)]
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    names = list(columns)
    if header:
        if not numbered:
            raise LayoutError(f"{shown}: empty; expected a header row ({sep}-separated: {', '.join(columns)})",
                              [Problem(shown, "missing-setup", "empty file")])
        line, first = numbered.pop(0)
        names = [h.strip() for h in first]
        need = list(required if required is not None else columns)
        lacking = [c for c in need if c not in names]
        if lacking:
            other = "" if delimiter in first[0] or len(first) > 1 else (
                f" (the line has no {sep}: is it {'comma' if delimiter == chr(9) else 'tab'}-separated?)")
            message = (f"line {line}: header {first!r} lacks {', '.join(lacking)}; expected the {dataset} header "
                       f"({sep}-separated): {', '.join(columns)}{other}")
            raise LayoutError(f"{shown}, {message}", [Problem(shown, "layout", message)])
    out, problems = [], []
    for line, row in numbered:
        if len(row) != len(names):
            message = (f"line {line}: {len(row)} field(s) {row!r}; expected {len(names)} {sep}-separated fields "
                       f"({', '.join(names)})")
            problems.append(Problem(shown, "layout", message))
            continue
        out.append((line, {n: v.strip() for n, v in zip(names, row)}))
    if problems:
        raise LayoutError(f"{shown}: {len(problems)} row(s) do not have the {dataset} layout; first: "
                          f"{problems[0].message}", problems)
    return out


def row_problem(path: Path, line: int, message: str, kind: str = "layout") -> Problem:
    """A problem with one row of a metadata file: ``FILE: line N: message``."""
    return Problem(str(path), kind, f"line {line}: {message}")


def raise_problems(problems: Sequence[Problem], what: str) -> None:
    """One :class:`LayoutError` naming every problem (file, line, expected form), if there are any."""
    if problems:
        shown = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise LayoutError(f"{what}: {len(problems)} problem(s): {shown}{more}", list(problems))


def missing_rows(root: Path, rows: Iterable[tuple[str, Path, int]]) -> list[Problem]:
    """``(file as listed, list file, line)`` rows whose file is not under ``root``.

    A path that leaves the root is not looked for: :class:`~asczoo.data.ClipDataset` refuses it as
    ``outside-root``, naming the same list and line.
    """
    out = []
    for file, source, line in rows:
        if place_listed(root, file)[0] is None:
            continue
        if not (root / file).is_file():
            out.append(Problem(file, "missing", f"listed in {source} line {line} but not found on disk "
                                                f"(expected {root / file})"))
    return out


def finish(
    *, name: str, root: Path, split: str, listing: Sequence[tuple[str, str | None, str]],
    classes: Sequence[str], frontend: Any, cache_dir: str | None, skip_bad: bool, source: str,
    identity: Mapping[str, Any], bad: Sequence[Problem], targets: Mapping[str, Sequence[str]] | None = None,
    origins: Sequence[str] | None = None,
) -> ClipDataset:
    """The dataset over ``listing`` with the rows in ``bad`` (missing clips and the like) left out.

    Without ``skip_bad`` the bad rows raise one :class:`DataError` first; an empty split always does.
    ``targets`` (file -> labels) makes a :class:`MultiLabelClips`. ``origins`` (one per listing row:
    ``FILE, line N``) name the rows in the base's own refusals (a path outside the root, a duplicate).
    """
    if bad and not skip_bad:
        raise_problems(bad, f"dataset {name!r} ({split}) at {root}")
    dropped = {p.path for p in bad}
    kept = [i for i, row in enumerate(listing) if row[0] not in dropped]
    where = None if origins is None else [origins[i] for i in kept]
    if not listing:
        raise LayoutError(f"dataset {name!r} at {root}: the {split} split ({source}) is empty; expected at least "
                          "one clip", [Problem(str(root / source.split(' ')[0]), "empty-split",
                                               f"the {split} split lists no clips")])
    kwargs = dict(name=name, root=root, split=split, listing=[listing[i] for i in kept], classes=classes,
                  frontend=frontend, cache_dir=cache_dir, skip_bad=skip_bad, source=source, identity=identity,
                  origins=where)
    dataset = MultiLabelClips(targets=targets, **kwargs) if targets is not None else ClipDataset(**kwargs)
    dataset.skipped[:0] = list(bad)
    return dataset


class MultiLabelClips(ClipDataset):
    """Clips with any number of labels: ``labels`` and items are multi-hot vectors over ``classes``.

    The listing is passed on unlabelled (every label is checked against the vocabulary by the reader,
    with its file and line); ``targets`` maps each file to its label names.
    """

    task = MULTI_LABEL

    def __init__(self, *, targets: Mapping[str, Sequence[str]], listing: Sequence[tuple[str, str | None, str]],
                 **kwargs: Any) -> None:
        super().__init__(listing=[(f, None, g) for f, _, g in listing], **kwargs)
        index = {c: i for i, c in enumerate(self.classes)}
        # keyed like ``files``: the base keeps each listed path in one spelling
        self.targets = {normalise_listed(f) or f: [index[label] for label in labels] for f, labels in targets.items()}

    def multi_hot(self, file: str) -> list[int]:
        out = [0] * len(self.classes)
        for i in self.targets.get(file, ()):
            out[i] = 1
        return out

    @property
    def labels(self) -> list[list[int]]:  # type: ignore[override]
        return [self.multi_hot(c.file) for c in self.clips]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        features, _ = super().__getitem__(index)
        return features, torch.tensor(self.multi_hot(self.clips[index].file), dtype=torch.long)


def device_attributes(dataset: ClipDataset, device_of: Mapping[str, str], unseen: Sequence[str]) -> ClipDataset:
    """Give a dataset what the per-device report reads: ``device_of`` (file -> device) and ``unseen_devices``."""
    dataset.device_of = dict(device_of)
    dataset.unseen_devices = list(unseen)
    return dataset


# -- synthetic clips ------------------------------------------------------------------------------------------

def tone_clip(label: int | Sequence[int], rng: np.random.Generator, *, seconds: float, rate: int,
              channels: int = 1) -> np.ndarray:
    """``(channels, samples)`` float32: each label's tone (its own frequency, amplitude-modulated) over
    quiet noise. Several labels sum their tones (multi-label clips)."""
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    out = 0.05 * rng.standard_normal((channels, n))
    labels = [label] if isinstance(label, int) else list(label)
    for k in labels:
        freq = 220.0 * 2 ** (k * 5 / 12)  # a fourth apart: distinct mel bands
        freq = min(freq, 0.4 * rate)
        phase = rng.uniform(0, 2 * math.pi)
        envelope = 0.6 + 0.4 * np.sin(2 * math.pi * (1.0 + k % 4) * t)
        out += 0.3 / max(1, len(labels)) * envelope * np.sin(2 * math.pi * freq * t + phase)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_clip(path: Path, waveform: np.ndarray, rate: int) -> None:
    """A 16-bit WAV (written atomically by asczoo's audio writer)."""
    from asczoo.data import write_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, torch.from_numpy(waveform), rate, fsync=False)


def write_table(path: Path, header: Sequence[str] | None, rows: Iterable[Sequence[Any]], delimiter: str) -> None:
    """A metadata table as the dataset publishes it (csv quoting where a field holds the delimiter)."""
    from asczoo.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


def prepare_root(root: str | Path, overwrite: bool) -> Path:
    """The synth target: new, empty, or (with ``overwrite``) anything."""
    base = Path(root)
    if base.exists() and any(base.iterdir()) and not overwrite:
        raise FileExistsError(f"{base} is not empty; pass --overwrite to write into it")
    base.mkdir(parents=True, exist_ok=True)
    return base


def attach(factory: Callable[..., Any], *, frontend_defaults: Mapping[str, Any], folds: Sequence[int],
           task: str, synthesize: Callable[..., Any], layout: str, channels: int | None) -> Callable[..., Any]:
    """Set the attributes the host reads on a dataset factory (see the module docstring)."""
    factory.channels = channels
    factory.frontend_defaults = dict(frontend_defaults)
    factory.folds = tuple(folds)
    factory.task = task
    factory.synthesize = synthesize
    factory.layout = layout
    return factory
