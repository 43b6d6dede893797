"""What dataset plugins build on: the clip dataset, metadata and setup tables, location-keeping splits.

:class:`ClipDataset` is the public base a dataset plugin returns: a torch ``Dataset`` of
``(features float32 (N, 3, F, T), label)`` over a checked clip list (listing checks, optional audio
checks with ``skip_bad``), served from the audio or from a feature cache it is attached to. The table
readers (:func:`read_table`, :func:`read_labelled_table`, :func:`read_setup_file`,
:func:`find_setup_file`), :func:`normalise_listed`, :func:`place_listed` and the split helpers
(:func:`location_of`, :func:`location_split`) are what readers of published layouts share.

Building datasets by name and extracting their caches is :mod:`asczoo.data.datasets`'s; this module
never looks a plugin up and never extracts, so it sits below that orchestration.
"""

from __future__ import annotations

import os
import posixpath
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from asczoo.data import feature_cache
from asczoo.data.audio import is_audio_file
from asczoo.data.checks import DataError, Problem, check_audio, check_files, check_listing, raise_if_errors
from asczoo.data.frontend import resolve_frontend
from asczoo.interfaces import Clip, Frontend
from asczoo.interfaces import Dataset as DatasetInterface

FILE_COLUMNS = ("filename", "file", "path", "audio", "file_name")
LABEL_COLUMNS = ("scene_label", "label", "class", "scene", "target")
GROUP_COLUMNS = ("identifier", "location", "group", "recording", "location_id")

#: DCASE file names ``scene-city-location-segment-device``: the location is ``city-location``
DCASE_NAME = re.compile(r"^[a-z_]+-(?P<location>[a-z]+-\d+)-\d+(?:-[a-z0-9]+)?$")

__all__ = [
    "ClipDataset", "read_table", "read_labelled_table", "read_labelled_lines", "read_setup_file", "find_setup_file", "normalise_listed",
    "location_split", "location_of", "place_listed", "links_followed", "FOLLOW_LINKS_ENV", "FILE_COLUMNS",
    "LABEL_COLUMNS", "GROUP_COLUMNS", "DCASE_NAME",
]


# -- clips and the dataset -----------------------------------------------------------------------------

class ClipDataset(DatasetInterface):
    """Labelled clips -> ``(features float32 (N, 3, F, T), label)``, from audio or a feature cache.

    Attributes: ``classes`` (list of class names, index = label), ``files`` (paths relative to
    ``root``, as listed), ``labels``, ``identifiers``, ``root``, ``split``, ``frontend`` and
    ``skipped`` (the :class:`~asczoo.data.checks.Problem` list of files left out with ``skip_bad``).
    ``entries`` are the clips as listed, before any audio was read.
    """

    def __init__(
        self,
        *,
        name: str,
        root: str | os.PathLike,
        split: str,
        listing: Sequence[tuple[str, str | None, str]],
        classes: Sequence[str],
        frontend: Frontend | Mapping[str, Any] | str | None = None,
        cache_dir: str | os.PathLike | None = None,
        skip_bad: bool = False,
        source: str = "",
        identity: Mapping[str, Any] | None = None,
        problems: Sequence[Problem] = (),
        origins: Sequence[str] | None = None,
        follow_links: bool | None = None,
    ) -> None:
        """``listing``: ``(file, label or None, identifier)`` as read; ``source``: the list's name for
        messages; ``identity``: what, besides name and root, determines the file lists (fold, options),
        recorded in the cache manifest so a cache can be matched to this dataset; ``problems``: what
        the plugin found wrong with listed files (a fold label contradicting the metadata, ...): those
        of listed files count like the listing checks' own (refused, or left out with ``skip_bad``).

        ``origins``: one per listing entry, where it was read (``metadata/UrbanSound8K.csv, line 7``),
        for the messages. Every listed path is checked here, for every dataset plugin alike (see
        :func:`place_listed`): one that leaves the root (absolute, ``..`` above it, or a symbolic link
        resolving outside it unless ``follow_links``) is an ``outside-root`` error, a file listed twice a
        ``duplicate`` error. ``follow_links`` None reads :data:`FOLLOW_LINKS_ENV`."""
        self.name = name
        self.root = Path(root).resolve()
        self.split = split
        self.classes = list(classes)
        unsafe = [c for c in self.classes if not isinstance(c, str) or not c or any(ch in c for ch in "\t\n\r")]
        if unsafe:  # they would split rows of the submission and scores files, and lines of the model card
            raise DataError(f"dataset {name!r}: class name(s) {', '.join(map(repr, unsafe))} hold a tab or line break "
                            "or are empty; rename them",
                            [Problem(repr(c), "unknown-label", "class name with a tab or line break") for c in unsafe])
        self.frontend = resolve_frontend(frontend)
        self.skip_bad = bool(skip_bad)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.identity = {"dataset": name, "root": str(self.root), **dict(identity or {})}
        where = f"dataset {name!r} ({split}) at {self.root}"
        listing = list(listing)
        shown = source or "the file list"
        if origins is not None and len(origins) != len(listing):
            raise ValueError(f"dataset {name!r}: {len(origins)} origins for {len(listing)} listed files; "
                             "expected one origin per listing entry")
        follow = links_followed(follow_links)
        placed, outside, kept_origins, listed_as = [], [], [], []
        for i, (f, lab, ident) in enumerate(listing):
            origin = origins[i] if origins is not None else f"{shown} entry {i + 1}"
            clean, reason = _place(self.root, f, follow)
            if clean is None:
                outside.append(Problem(str(f), "outside-root", f"{origin}: {reason}"))
                continue
            placed.append((clean, lab, ident))
            kept_origins.append(origin)
            listed_as.append(f)
        keep, found = check_listing(
            [(f, lab) for f, lab, _ in placed], self.classes, lambda f: (self.root / f).is_file(),
            source=shown, origins=kept_origins if origins is not None else None,
        )
        here = {f for f, _, _ in listing}
        theirs = [p for p in problems if p.path in here]
        refused = {p.path for p in theirs if p.severity == "error"}
        keep = [i for i in keep if listed_as[i] not in refused and placed[i][0] not in refused]
        listing = placed
        problems = outside + theirs + found
        if not self.skip_bad:
            raise_if_errors(problems, where, "Fix them, or pass skip_bad=True (--skip-bad) to leave them out.")
        self.skipped: list[Problem] = list(problems)
        index = {c: i for i, c in enumerate(self.classes)}
        self.entries = [
            Clip(f, str(self.root / f), -1 if lab is None else index[lab], ident)
            for f, lab, ident in (listing[i] for i in keep)
        ]
        self._clips: list[Clip] | None = None
        self._store = None
        #: True while ``cache_dir`` is set but no complete cache covers the listed files (a dataset
        #: never extracts; :func:`create_dataset` extracts, then calls :meth:`attach_cache`)
        self.needs_extraction = self.cache_dir is not None and not self.attach_cache(required=False)

    def attach_cache(self, *, required: bool = True) -> bool:
        """Serve features from the complete cache in ``cache_dir`` that covers the listed files.

        Returns False when there is none (``required=False``) or raises :class:`DataError` naming the
        cache (``required=True``).
        """
        found = feature_cache.attach(self)
        if found is None:
            if required:
                raise DataError(f"feature cache {self.cache_dir}: dataset {self.name!r} ({self.split}) lists files "
                                "that no complete extraction covers (its 'all' split must list them; open the "
                                "dataset with asczoo.create_dataset or run `asczoo extract` first)")
            return False
        self._store, self._clips, bad = found
        self.skipped.extend(bad)
        self.needs_extraction = False
        return True

    # -- the file list, after audio checks ---------------------------------------------------------

    @property
    def clips(self) -> list[Clip]:
        if self.needs_extraction:
            self.attach_cache()  # built meanwhile, or a DataError that says what to run
        if self._clips is None:
            self._clips = self._scan() if self.skip_bad else list(self.entries)
        return self._clips

    @property
    def files(self) -> list[str]:
        return [c.file for c in self.clips]

    @property
    def labels(self) -> list[int]:
        return [c.label for c in self.clips]

    @property
    def identifiers(self) -> list[str]:
        return [c.identifier for c in self.clips]

    def _scan(self) -> list[Clip]:
        found = check_files({c.file: c.path for c in self.entries}, self.frontend, progress=False)
        bad = {p.path for p in found if p.severity == "error"}
        self.skipped.extend(p for p in found if p.path in bad)
        return [c for c in self.entries if c.file not in bad]

    # -- torch Dataset -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[index]
        if self._store is not None:
            return self._store.features(clip.file), clip.label
        problems, waveform, rate = check_audio(
            clip.path, sample_rate=self.frontend.sample_rate,
            clip_seconds=float(self.frontend.config.get("clip_seconds", 10.0)), name=clip.file,
        )
        raise_if_errors(problems, f"dataset {self.name!r} ({self.split}) at {self.root}")
        return self.frontend(waveform, rate).to(torch.float32), clip.label

    def path(self, index: int) -> str:
        """Absolute path of clip ``index``."""
        return self.clips[index].path

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``(3, n_mels)``: the training split's statistics from the feature cache."""
        if self._store is None:
            raise ValueError(f"dataset {self.name!r} has no feature cache; pass cache_dir=..., or use "
                             "asczoo.data.feature_cache.compute_normalization(dataset)")
        return self._store.normalization()

    def __repr__(self) -> str:
        cache = f", cache={str(self.cache_dir)!r}" if self.cache_dir else ""
        return (f"ClipDataset({self.name!r}, split={self.split!r}, clips={len(self.entries)}, "
                f"classes={len(self.classes)}, root={str(self.root)!r}{cache})")


# -- tables and setup files ------------------------------------------------------------------------------

#: a metadata or setup table larger than this is refused unread
MAX_TABLE_BYTES = 256 * 2**20


def read_table(path: str | os.PathLike) -> tuple[list[str] | None, list[list[str]]]:
    """A tab- or comma-separated text file: ``(header or None, rows)``.

    The delimiter is a tab if the first line has one, else a comma. The first line is a header when
    its first field is not an audio file name (``filename``, ``file``, ...). Blank lines are skipped.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:  # a listing of a million clips is about 60 MB
            raise DataError(f"{path}: {size} bytes; a metadata or setup table is at most {MAX_TABLE_BYTES}",
                            [Problem(str(path), "missing-setup", f"{size} bytes, more than {MAX_TABLE_BYTES}")])
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found",
                        [Problem(str(path), "missing-setup", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})",
                        [Problem(str(path), "missing-setup", f"not a UTF-8 text file ({exc.reason})")]) from None
    lines = [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]
    if not lines:
        return None, []
    sep = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    rows = [[field.strip() for field in (line.split(sep) if sep else [line])] for line in lines]
    header = None
    if not is_audio_file(rows[0][0]):
        header = [h.lower() for h in rows[0]]
        rows = rows[1:]
    return header, rows


def _column(header: list[str] | None, names: Sequence[str], default: int | None) -> int | None:
    if header is None:
        return default
    for name in names:
        if name in header:
            return header.index(name)
    return None


def read_labelled_table(path: str | os.PathLike) -> list[tuple[str, str | None, str | None]]:
    """``(file, label or None, group or None)`` rows of a table with or without a header.

    Without a header the columns are file, label, group (DCASE meta.csv order is file, label,
    identifier). With one, they are found by name (``filename``/``file``, ``scene_label``/``label``,
    ``identifier``/``location``).
    """
    return [(f, label, group) for f, label, group, _ in read_labelled_lines(path)]


def read_labelled_lines(path: str | os.PathLike) -> list[tuple[str, str | None, str | None, int]]:
    """:func:`read_labelled_table` with each row's line number, for :class:`ClipDataset`'s ``origins``."""
    header, rows = read_table(path)
    fcol = _column(header, FILE_COLUMNS, 0)
    lcol = _column(header, LABEL_COLUMNS, 1)
    gcol = _column(header, GROUP_COLUMNS, 2)
    if fcol is None:
        raise DataError(f"{path}: no file column; expected one of {', '.join(FILE_COLUMNS)} in the header {header}",
                        [Problem(str(path), "missing-setup", f"no file column in the header {header}")])
    out = []
    outside: list[Problem] = []
    for number, row in enumerate(rows, start=2 if header else 1):
        if fcol >= len(row) or not row[fcol]:
            raise DataError(f"{path}, line {number}: no file name in {row}",
                            [Problem(str(path), "missing-setup", f"line {number}: no file name")])
        label = row[lcol] if lcol is not None and lcol < len(row) and row[lcol] else None
        group = row[gcol] if gcol is not None and gcol < len(row) and row[gcol] else None
        file = normalise_listed(row[fcol])
        if file is None:
            outside.append(Problem(row[fcol], "outside-root",
                                   f"{path}, line {number}: the path leaves the dataset root (absolute, or '..' "
                                   "above it); expected a path relative to the root"))
            continue
        out.append((file, label, group, number))
    if outside:
        raise_if_errors(outside, f"{path}", "Every listed file must lie inside the dataset root.")
    return out


def normalise_listed(file: str) -> str | None:
    """A listed path in one spelling (``./audio/x.wav`` and ``audio//x.wav`` are ``audio/x.wav``), or None
    when its text leaves the dataset root: absolute (``/etc/passwd``, ``/proc/self/environ``) or climbing
    above it with ``..``. Symbolic links are :func:`place_listed`'s to judge (it needs the root).
    """
    if not isinstance(file, str) or not file or "\x00" in file:
        return None
    if file.startswith("/"):
        return None
    clean = posixpath.normpath(file)
    if clean in (".", "..") or clean.startswith("../"):
        return None
    return clean


#: set to 1 to let a listed file be a symbolic link that resolves outside the dataset root (clips
#: linked from a data disk); by default such a file is refused like ``../x.wav``
FOLLOW_LINKS_ENV = "ASCZOO_FOLLOW_DATA_LINKS"


def links_followed(follow_links: bool | None = None) -> bool:
    """``follow_links``, or when None whether :data:`FOLLOW_LINKS_ENV` is set to 1/true/yes."""
    if follow_links is not None:
        return bool(follow_links)
    return os.environ.get(FOLLOW_LINKS_ENV, "").strip().lower() in ("1", "true", "yes")


def place_listed(root: str | os.PathLike, file: str, *, follow_links: bool | None = None
                 ) -> tuple[str | None, str]:
    """``(clean path, "")`` for a listed file that stays inside ``root``, else ``(None, why)``.

    The text must not leave the root (:func:`normalise_listed`), and, unless links are followed
    (:func:`links_followed`), the path with every symbolic link resolved must still lie inside the
    resolved root: a link ``audio/x.wav -> /home/me/.ssh/id_rsa`` is refused like ``../x.wav``. Only
    metadata is read (no file is opened). :class:`ClipDataset` runs this on every listed file, so a
    dataset plugin gets the check without writing it.
    """
    return _place(Path(root).resolve(), file, links_followed(follow_links))


def _place(base: Path, file: str, follow: bool) -> tuple[str | None, str]:
    """:func:`place_listed` with the root already resolved (once per dataset, not once per file)."""
    clean = normalise_listed(file)
    if clean is None:
        return None, ("the path leaves the dataset root (absolute, or '..' above it); expected a path "
                      "relative to the root")
    if follow:
        return clean, ""
    real = Path(os.path.realpath(base / clean))
    if real != base and not real.is_relative_to(base):
        return None, (f"the path resolves through a symbolic link to {real}, outside the dataset root {base}; "
                      f"expected a file inside it (set {FOLLOW_LINKS_ENV}=1 to follow links out of the root)")
    return clean, ""


def read_setup_file(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """``(file, label or None)`` rows of a DCASE setup file (``fold1_train.csv``/``.txt`` and the like)."""
    return [(f, label) for f, label, _ in read_labelled_table(path)]


def find_setup_file(root: str | os.PathLike, fold: int, part: str,
                    extensions: Sequence[str] = (".csv", ".txt")) -> Path:
    """``evaluation_setup/fold{fold}_{part}`` with the first extension that exists."""
    tried = [Path(root) / "evaluation_setup" / f"fold{fold}_{part}{ext}" for ext in extensions]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    names = " or ".join(str(t) for t in tried)
    raise DataError(f"setup file for fold {fold} ({part}) not found: tried {names}",
                    [Problem(str(tried[0].with_suffix("")) + ".*", "missing-setup",
                             f"no fold {fold} {part} list (tried {', '.join(e for e in extensions)})")])


# -- recording locations and splits ------------------------------------------------------------------------

def location_of(file: str, pattern: str | re.Pattern[str] | None = None) -> str:
    """The recording location of a file from its name.

    ``pattern``: a regular expression searched in the file's stem; its group ``location`` (or first
    group, or whole match) is the location. By default DCASE names ``scene-city-location-segment-device``
    give ``city-location``; other names are their own location (each file alone).
    """
    stem = Path(file).stem
    if pattern is None:
        match = DCASE_NAME.match(stem)
        return match.group("location") if match else stem
    match = re.search(pattern, stem)
    if not match:
        return stem
    if "location" in match.re.groupindex:
        return match.group("location")
    return match.group(1) if match.re.groups else match.group(0)


def location_split(groups: Sequence[str], labels: Sequence[Any], evaluate_fraction: float, seed: int) -> list[bool]:
    """Which clips go to the evaluation side (True) so that no location crosses the split.

    Locations are assigned whole, class by class (a location counts for its most frequent label):
    each class's locations are shuffled with ``seed`` and moved to the evaluation side until it holds
    at least ``evaluate_fraction`` of that class's clips. Each class with two or more locations keeps at
    least one on each side.
    """
    if not 0.0 < evaluate_fraction < 1.0:
        raise ValueError(f"evaluate_fraction must be between 0 and 1, got {evaluate_fraction!r}")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_class: dict[Any, list[str]] = defaultdict(list)
    for g, idx in members.items():
        majority = Counter(labels[i] for i in idx).most_common(1)[0][0]
        by_class[majority].append(g)
    rng = random.Random(seed)
    evaluate: set[str] = set()
    for label in sorted(by_class, key=str):
        locations = sorted(by_class[label])
        rng.shuffle(locations)
        total = sum(len(members[g]) for g in locations)
        taken = 0
        for g in locations[:-1] if len(locations) > 1 else []:
            if taken >= evaluate_fraction * total:
                break
            evaluate.add(g)
            taken += len(members[g])
    return [g in evaluate for g in groups]
