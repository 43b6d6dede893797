"""Checks on a dataset's listing and audio files: what ``asczoo check-data`` reports.

Every problem is a :class:`Problem` naming the file, a kind and what was expected. Kinds and their
severity (an *error* would break or silently corrupt training; a *warning* is handled by the
frontend but is probably not what the user meant):

=================  =========  ==============================================================
kind               severity   meaning
=================  =========  ==============================================================
missing            error      listed in the metadata or a setup file, but not on disk
missing-setup      error      a setup/metadata file the dataset needs does not exist or is empty
unreadable         error      libsndfile cannot open or decode the file
truncated          error      the WAV header declares more samples than the file holds
not-a-file         error      a folder, FIFO, device or socket where an audio file is listed (never opened)
limits             error      the header's sample rate, channels or length is beyond the limits of
                              :mod:`asczoo.data.audio` (checked before anything is allocated)
non-finite         error      NaN or Inf samples (floating-point files)
amplitude          error      samples beyond +-``asczoo.data.audio.MAX_AMPLITUDE`` (full scale is 1)
unknown-label      error      a label that is not in the class list
no-label           error      a row of a training or evaluation list without a label
label-conflict     error      a fold list's label differs from the file's label in meta.csv
outside-root       error      a listed path that leaves the dataset root (absolute, ``..``, or a symbolic
                              link resolving outside it)
duplicate          error      the same file listed twice in one list (``./a.wav`` and ``a.wav`` are one)
channels           error/warn more than two channels (error) or mono (warning: duplicated)
sample-rate        warning    not the frontend's rate (resampled)
too-short          error/warn no samples at all (error) or shorter than 90 % of a clip (padded)
silence            warning    peak below -80 dBFS
split-overlap      warning    the same file in the training and the evaluation list
=================  =========  ==============================================================

The same functions run in three places with one policy: ``check-data`` reports everything; feature
extraction and datasets refuse to go on when there are errors, unless ``skip_bad`` is set, in which
case the bad files are left out and listed (``dataset.skipped``, the cache manifest).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from typing import Any, Iterable, Sequence

import torch

from asczoo.data._parallel import ordered_map
from asczoo.data.audio import MAX_AMPLITUDE, AudioError, audio_info, read_audio

ERROR, WARNING = "error", "warning"

#: share of the nominal clip length below which a clip is reported as too short
SHORT_FRACTION = 0.9
#: peak level (dBFS) below which a clip counts as silent
SILENCE_DBFS = -80.0


class DataError(ValueError):
    """Bad data that would break training; the message lists every problem found."""

    def __init__(self, message: str, problems: Sequence["Problem"] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or setup file)."""

    path: str
    kind: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.severity.upper():<7} {self.path}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "Problem":
        return cls(**data)


@dataclasses.dataclass
class Report:
    """All problems found in a dataset, and how many files were looked at."""

    problems: list[Problem] = dataclasses.field(default_factory=list)
    files_checked: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def add(self, problems: Iterable[Problem]) -> None:
        seen = set(self.problems)
        for p in problems:
            if p not in seen:
                self.problems.append(p)
                seen.add(p)

    def summary(self) -> str:
        kinds = Counter(p.kind for p in self.problems)
        detail = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))
        return (f"{self.files_checked} files checked: {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s)" + (f" ({detail})" if detail else ""))

    def format(self) -> str:
        lines = [str(p) for p in sorted(self.problems, key=lambda p: (p.severity != ERROR, p.path, p.kind))]
        return "\n".join([*lines, self.summary()])

    def to_json(self) -> str:
        return json.dumps({"files_checked": self.files_checked,
                           "problems": [p.to_dict() for p in self.problems]}, indent=2)


def raise_if_errors(problems: Sequence[Problem], what: str, hint: str = "") -> None:
    """Raise :class:`DataError` listing every error-level problem, if there is any."""
    errors = [p for p in problems if p.severity == ERROR]
    if not errors:
        return
    shown = "\n  ".join(str(p) for p in errors[:50])
    more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
    raise DataError(f"{what}: {len(errors)} bad input(s):\n  {shown}{more}" + (f"\n{hint}" if hint else ""), errors)


# -- listing checks (cheap: no audio is read) ---------------------------------------------------------

def check_listing(
    entries: Sequence[tuple[str, str | None]],
    classes: Sequence[str] | None,
    exists: Any,
    *,
    source: str,
    origins: Sequence[str] | None = None,
) -> tuple[list[int], list[Problem]]:
    """Check ``(file, label)`` entries of one list; return the indices to keep and the problems.

    ``exists(file) -> bool`` says whether a file is on disk; ``label`` None means unlabelled (test
    lists). ``source`` (the list's file name) goes into the messages; ``origins``, one per entry, where
    it was read (``meta.csv, line 4``), replaces it where given. A file listed a second time is a
    ``duplicate`` error in every dataset alike: the first entry is kept, the repeat is refused (or left
    out with ``skip_bad``), so no clip silently counts twice.
    """
    keep: list[int] = []
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    known = set(classes) if classes is not None else None

    def where(i: int) -> str:
        return origins[i] if origins is not None else f"{source} entry {i + 1}"

    for i, (file, label) in enumerate(entries):
        if file in first_seen:
            first = first_seen[file]
            if origins is None:
                message = f"listed again in {source} (entries {first + 1} and {i + 1})"
            else:
                message = f"{where(i)}: listed again (first at {where(first)}); expected each file once"
            problems.append(Problem(file, "duplicate", message))
            continue
        first_seen[file] = i
        bad = False
        if label is not None and known is not None and label not in known:
            problems.append(Problem(file, "unknown-label",
                                    f"label {label!r} in {source if origins is None else where(i)} is not in the "
                                    f"class list {sorted(known)}"))
            bad = True
        if not exists(file):
            problems.append(Problem(file, "missing", f"listed in {source if origins is None else where(i)} but not "
                                                     "found on disk"))
            bad = True
        if not bad:
            keep.append(i)
    return keep, problems


# -- audio checks (read the file) ----------------------------------------------------------------------

def check_audio(
    path: str,
    *,
    sample_rate: int,
    clip_seconds: float,
    channels: int = 2,
    name: str | None = None,
) -> tuple[list[Problem], torch.Tensor | None, int | None]:
    """Check one audio file; return its problems and, if it could be read, its samples and rate.

    ``name`` is how the file is shown (its listed path); ``sample_rate``, ``channels`` and
    ``clip_seconds`` are what the frontend expects.
    """
    shown = name or path
    problems: list[Problem] = []
    try:
        info = audio_info(path)
    except AudioError as exc:
        return [Problem(shown, exc.kind, _strip_path(str(exc), path))], None, None
    if info.truncated:
        problems.append(Problem(shown, "truncated",
                                f"the header declares {info.declared_frames} frames "
                                f"({info.declared_frames / info.sample_rate:.2f} s) but the file holds "
                                f"{info.frames} ({info.seconds:.2f} s)"))
    try:
        waveform, rate = read_audio(path, check_values=False)  # the values are reported below
    except AudioError as exc:
        return [*problems, Problem(shown, exc.kind, _strip_path(str(exc), path))], None, None
    n_channels, n_samples = waveform.shape
    if n_channels > 2:
        problems.append(Problem(shown, "channels", f"{n_channels} channels; expected {channels} (stereo)"))
    elif n_channels != channels:
        problems.append(Problem(shown, "channels",
                                f"{n_channels} channel(s); expected {channels} (mono is duplicated to both sides)",
                                WARNING))
    if rate != sample_rate:
        problems.append(Problem(shown, "sample-rate", f"{rate} Hz; expected {sample_rate} Hz (will be resampled)",
                                WARNING))
    seconds = n_samples / rate if rate else 0.0
    if n_samples == 0:
        problems.append(Problem(shown, "too-short", "no samples at all"))
    elif seconds < SHORT_FRACTION * clip_seconds:
        problems.append(Problem(shown, "too-short",
                                f"{seconds:.2f} s; expected {clip_seconds:g} s (will be zero-padded)", WARNING))
    finite = torch.isfinite(waveform)
    if not bool(finite.all()):
        nan = int(torch.isnan(waveform).sum())
        inf = int(torch.isinf(waveform).sum())
        problems.append(Problem(shown, "non-finite", f"{nan} NaN and {inf} Inf samples; expected finite samples"))
    elif n_samples:
        peak = float(waveform.abs().max())
        if peak > MAX_AMPLITUDE:
            problems.append(Problem(shown, "amplitude", f"peak sample value {peak:.3g}; expected at most "
                                                        f"{MAX_AMPLITUDE:g} in absolute value (full scale is 1)"))
        elif peak <= 10 ** (SILENCE_DBFS / 20):
            level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.1f}"
            problems.append(Problem(shown, "silence", f"peak level {level} dBFS (below {SILENCE_DBFS:g} dBFS)",
                                    WARNING))
    return problems, waveform, rate


def split_overlap(train: Iterable[str], evaluate: Iterable[str], *, source: str) -> list[Problem]:
    """Files that are both in the training and the evaluation list (a leak, not a crash)."""
    both = sorted(set(train) & set(evaluate))
    return [Problem(f, "split-overlap", f"in both the training and the evaluation list of {source}", WARNING)
            for f in both]


def _strip_path(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(path + ": ") else message



def check_files(files: dict[str, str], frontend: Any, *, workers: int = 0, progress: bool = True,
                channels: int = 2) -> list[Problem]:
    """Run :func:`check_audio` on ``{shown name: path}`` with a progress bar, in parallel if asked;
    ``channels``: the channel count the dataset's clips have (others get a warning)."""
    jobs = [(shown, path, frontend.sample_rate, _clip_seconds(frontend), channels)
            for shown, path in sorted(files.items())]
    problems: list[Problem] = []
    for found in ordered_map(_check_job, jobs, workers=workers, progress=progress, desc="check"):
        problems.extend(found)
    return problems


def _check_job(job: tuple[str, str, int, float, int]) -> list[Problem]:
    shown, path, rate, seconds, channels = job
    return check_audio(path, sample_rate=rate, clip_seconds=seconds, channels=channels, name=shown)[0]


def _clip_seconds(frontend: Any) -> float:
    return float(getattr(frontend, "config", {}).get("clip_seconds", 10.0))
