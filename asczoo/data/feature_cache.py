"""The feature cache: features computed once, stored compactly, read memory-mapped, resumable.

Layout of a cache directory (default ``ROOT/.asczoo-cache``)::

    CACHE/
      <config key>/                        one per frontend config and storage dtype
        frontend.json                      that config and dtype (for people; not read back)
        shards/<shard key>.safetensors     features of up to ``shard_size`` files, one tensor
                                           "features" (K, N, 3, F, T), the file list in its metadata
        <dataset key>.manifest.json        written last: marks an extraction complete

* The **config key** hashes the frontend's ``config`` and the dtype (``float16`` halves the size;
  log-mel values keep about 3 significant digits, far below their spread).
* A **shard key** hashes the config key and the *fingerprints* of its files: path as listed, size and
  modification time (nanoseconds). Editing a file changes its fingerprint, so only its shard is
  recomputed; copying a dataset with its times (``cp -a``, ``rsync -a``) keeps the cache valid.
* The **dataset key** hashes the dataset plugin, resolved root, fold and list-defining options. Its
  manifest maps every file to its shard and row, lists the files left out (``skip_bad``) with their
  problems, and holds the **normalisation statistics**: mean and std per (channel, mel band), shape
  ``(3, n_mels)``, over every frame of every segment of the training split's stored features. Read them
  with :func:`load_normalization` or ``dataset.normalization()``.

Every file is written atomically (:mod:`asczoo.atomic`), shards as soon as they are complete. An
interrupted extraction leaves complete shards and no manifest: it does not look finished, and running
it again recomputes only the missing shards. With bad input (:mod:`asczoo.data.checks`) extraction
fails by default after looking at every file, listing them all, and writes no manifest; with
``skip_bad`` it leaves the bad files out and records them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from asczoo.atomic import atomic_save_safetensors, atomic_write_text
from asczoo.data._lookup import construct_dataset
from asczoo.data._parallel import ordered_map
from asczoo.data.checks import ERROR, DataError, Problem, Report, check_audio, raise_if_errors
from asczoo.data.frontend import config_key, resolve_frontend
from asczoo.interfaces import Frontend

DTYPES = {"float16": torch.float16, "float32": torch.float32}
DEFAULT_DTYPE = "float16"
SHARD_SIZE = 64
CACHE_DIRNAME = ".asczoo-cache"
MANIFEST_SUFFIX = ".manifest.json"
FORMAT = 1
#: standard deviations are floored here so that normalising never divides by zero
MIN_STD = 1e-5

__all__ = [
    "CacheInfo", "FeatureStore", "extract", "attach", "load_normalization", "compute_normalization", "feature_statistics",
    "default_cache_dir", "fingerprint", "ordered_map",
]


def default_cache_dir(root: str | os.PathLike) -> Path:
    """Where ``asczoo extract`` puts a dataset's cache unless told otherwise."""
    return Path(root) / CACHE_DIRNAME


def fingerprint(file: str, path: str | os.PathLike) -> str:
    """``file|size|mtime_ns``: changes when the file at ``path`` (listed as ``file``) changes."""
    st = os.stat(path)
    return f"{file}|{st.st_size}|{st.st_mtime_ns}"


def _config_dir(cache_dir: Path, frontend: Frontend, dtype: str) -> Path:
    return cache_dir / config_key(frontend.config, dtype)


def _dataset_key(identity: Mapping[str, Any]) -> str:
    return config_key(dict(identity))


@dataclasses.dataclass
class CacheInfo:
    """What :func:`extract` did and where the result is."""

    directory: Path
    manifest: Path
    files: int
    shards_computed: int
    shards_reused: int
    skipped: list[Problem]
    warnings: list[Problem]
    mean: torch.Tensor
    std: torch.Tensor


# -- parallel map with a progress bar --------------------------------------------------------------------


# -- extraction ------------------------------------------------------------------------------------------

def _compute(job: tuple[str, str], *, frontend: Frontend, dtype: str) -> tuple[list[Problem], torch.Tensor | None]:
    file, path = job
    problems, waveform, rate = check_audio(
        path, sample_rate=frontend.sample_rate, clip_seconds=float(frontend.config.get("clip_seconds", 10.0)),
        name=file,
    )
    if waveform is None or any(p.severity == ERROR for p in problems):
        return problems, None
    features = frontend(waveform, rate).to(DTYPES[dtype])
    if not bool(torch.isfinite(features).all()):  # e.g. loud float audio overflowing float16 features
        return [*problems, Problem(file, "non-finite", f"its {dtype} features hold NaN or Inf values "
                                                       "(samples too loud for the frontend?)")], None
    return problems, features


def extract(
    dataset: str,
    root: str | os.PathLike,
    *,
    fold: int | None = 1,
    frontend: Frontend | Mapping[str, Any] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    dtype: str = DEFAULT_DTYPE,
    skip_bad: bool = False,
    progress: bool = True,
    shard_size: int = SHARD_SIZE,
    **options: Any,
) -> CacheInfo:
    """Compute and store the features of every file of a dataset, then the training statistics.

    Files are those of the dataset's ``all`` split; statistics come from its ``train`` split.
    ``options`` go to the dataset plugin. Returns a :class:`CacheInfo`; raises :class:`DataError`
    listing every bad input unless ``skip_bad``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    fe = resolve_frontend(frontend)
    root = Path(root).resolve()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    def listed(split: str) -> Any:  # the file list only: these datasets have no cache to attach
        return construct_dataset(dataset, root, split=split, fold=fold, frontend=fe, cache_dir=None,
                                 options={**options, "skip_bad": True})

    listing = listed("all")
    splits = {split: listed(split) for split in ("train", "evaluate", "test")}
    train = splits["train"]
    listed = Report()  # listing problems of every list, each reported once
    for ds in (listing, *splits.values()):
        listed.add(ds.skipped)
    where = f"feature extraction of dataset {dataset!r} at {root}"
    hint = "Nothing was marked complete. Fix the files, or pass --skip-bad (skip_bad=True) to leave them out."
    if not skip_bad:
        raise_if_errors(listed.problems, where, hint)

    clips = sorted(listing.entries, key=lambda c: c.file)
    fingerprints = [fingerprint(c.file, c.path) for c in clips]
    ckey_dir = _config_dir(cache, fe, dtype)
    shard_dir = ckey_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ckey_dir / "frontend.json", json.dumps({"frontend": fe.config, "dtype": dtype}, indent=2))

    chunks = [list(range(i, min(i + shard_size, len(clips)))) for i in range(0, len(clips), shard_size)]
    names = [config_key({"shard": [fingerprints[i] for i in chunk]}, ckey_dir.name) for chunk in chunks]
    done = [(shard_dir / f"{n}.safetensors").is_file() for n in names]
    todo = [i for chunk, d in zip(chunks, done) if not d for i in chunk]
    compute = functools.partial(_compute, frontend=fe, dtype=dtype)
    results = ordered_map(compute, [(clips[i].file, clips[i].path) for i in todo], workers=workers,
                          progress=progress, desc="extract", total=len(clips), initial=len(clips) - len(todo),
                          unit="clip")

    errors: list[Problem] = []
    computed = 0
    for chunk, name, d in zip(chunks, names, done):
        if d:
            continue
        rows, files, bad, warn = [], [], {}, {}
        for i in chunk:
            problems, features = next(results)
            file = clips[i].file
            if features is None:
                bad[file] = [p.to_dict() for p in problems]
                errors.extend(p for p in problems if p.severity == ERROR)
            else:
                rows.append(features)
                files.append(file)
            if any(p.severity != ERROR for p in problems) and features is not None:
                warn[file] = [p.to_dict() for p in problems]
        if bad and not skip_bad:
            continue  # never store a shard that an error-policy run would have to trust
        stacked = torch.stack(rows) if rows else torch.zeros((0, *fe.output_shape), dtype=DTYPES[dtype])
        atomic_save_safetensors({"features": stacked}, shard_dir / f"{name}.safetensors", metadata={
            "format": str(FORMAT), "files": json.dumps(files), "skipped": json.dumps(bad),
            "warnings": json.dumps(warn), "fingerprints": json.dumps([fingerprints[i] for i in chunk]),
        })
        computed += 1
    results.close()  # finishes the progress bar

    # Gather the index from the shards (reused ones included): file -> (shard, row), problems.
    entries: dict[str, list[Any]] = {}
    skipped: dict[str, list[dict[str, str]]] = {}
    warnings: dict[str, list[dict[str, str]]] = {}
    for chunk, name in zip(chunks, names):
        path = shard_dir / f"{name}.safetensors"
        if not path.is_file():
            continue
        meta = _shard_metadata(path)
        for row, file in enumerate(json.loads(meta["files"])):
            entries[file] = [name, row]
        skipped.update(json.loads(meta["skipped"]))
        warnings.update(json.loads(meta.get("warnings", "{}")))
    bad_problems = [Problem.from_dict(p) for probs in skipped.values() for p in probs]
    if not skip_bad:
        raise_if_errors(errors + [p for p in bad_problems if p not in errors], where, hint)

    by_file = {c.file: fp for c, fp in zip(clips, fingerprints)}
    train_files = sorted(c.file for c in train.entries if c.file in entries)
    if not train_files:
        raise DataError(f"{where}: the training split has no usable files, so no normalisation statistics")
    mean, std, count = _statistics(shard_dir, [entries[f] for f in train_files])
    if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all()):
        raise DataError(f"{where}: the normalisation statistics of the training split are not finite "
                        "(features too large for float64 sums); nothing was marked complete")
    identity = listing.identity
    manifest = {
        "format": FORMAT, "identity": identity, "frontend": fe.config, "dtype": dtype,
        "files": {f: [by_file[f], *entries[f]] for f in sorted(entries)},
        "skipped": {f: {"fingerprint": by_file[f], "problems": skipped[f]} for f in sorted(skipped)},
        "listing_skipped": [p.to_dict() for p in listed.problems],
        "warnings": warnings,
        "normalization": {"split": "train", "files": len(train_files), "frames": count,
                          "mean": mean.tolist(), "std": std.tolist()},
    }
    manifest_path = ckey_dir / f"{_dataset_key(identity)}{MANIFEST_SUFFIX}"
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return CacheInfo(
        directory=ckey_dir, manifest=manifest_path, files=len(entries), shards_computed=computed,
        shards_reused=sum(done), skipped=[p for p in bad_problems + listed.problems if p.severity == ERROR],
        warnings=[Problem.from_dict(p) for probs in warnings.values() for p in probs], mean=mean, std=std,
    )


def _shard_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def feature_statistics(chunks: Iterable[torch.Tensor], *, what: str = "the features") -> tuple[torch.Tensor, torch.Tensor, int]:
    """The one statistics function: mean and std per (channel, mel band) over every frame of every
    segment of ``chunks`` (each ``(..., C, F, T)``), summed in float64; std floored at ``MIN_STD``.
    Returns ``(mean, std, frames counted)``."""
    total = total_sq = None
    count = 0
    for chunk in chunks:
        x = chunk.to(torch.float64)
        x = x.reshape(-1, *x.shape[-3:]).permute(1, 2, 0, 3).flatten(2)  # (C, F, frames)
        s, sq = x.sum(dim=-1), x.square().sum(dim=-1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[-1]
    if not count:
        raise ValueError(f"no statistics: {what} are empty")
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    return mean.float(), var.sqrt().clamp_min(MIN_STD).float(), count


def _statistics(shard_dir: Path, locations: Sequence[Sequence[Any]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`feature_statistics` of the given ``(shard, row)`` rows, read shard by shard."""
    from safetensors import safe_open

    rows_by_shard: dict[str, list[int]] = {}
    for shard, row in locations:
        rows_by_shard.setdefault(shard, []).append(int(row))

    def chunks() -> Iterator[torch.Tensor]:
        for shard, rows in sorted(rows_by_shard.items()):
            with safe_open(str(shard_dir / f"{shard}.safetensors"), framework="pt") as f:
                yield f.get_tensor("features")[rows]  # (R, N, 3, F, T)

    return feature_statistics(chunks(), what="the training split's features")


# -- reading ---------------------------------------------------------------------------------------------

class FeatureStore:
    """Reads one dataset's features from a complete cache (memory-mapped safetensors shards)."""

    def __init__(self, config_dir: Path, manifest: dict[str, Any]) -> None:
        self.config_dir = config_dir
        self.manifest = manifest
        self.dtype = manifest["dtype"]
        self._index = {f: (shard, row) for f, (_, shard, row) in manifest["files"].items()}
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()
        #: return features in the stored dtype (float16 for a float16 cache) instead of float32: the
        #: training engine's DataLoader sets it, so workers and pinned memory move half the bytes and
        #: the conversion happens on the device
        self.keep_dtype = False

    def __contains__(self, file: str) -> bool:
        return file in self._index

    def features(self, file: str) -> torch.Tensor:
        """float32 ``(N, 3, F, T)`` of a listed file (the stored dtype with :attr:`keep_dtype`)."""
        from safetensors import safe_open

        if self._pid != os.getpid():  # a DataLoader worker: open the shards again in this process
            self._handles, self._pid = {}, os.getpid()
        try:
            shard, row = self._index[file]
        except KeyError:
            raise KeyError(f"{file}: not in the feature cache {self.config_dir}") from None
        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.config_dir / "shards" / f"{shard}.safetensors"), framework="pt")
            self._handles[shard] = handle
        rows = handle.get_slice("features")[row]
        return rows if self.keep_dtype else rows.to(torch.float32)

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.manifest["normalization"]
        return torch.tensor(stats["mean"], dtype=torch.float32), torch.tensor(stats["std"], dtype=torch.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == FORMAT else None


def attach(dataset: Any) -> tuple[FeatureStore, list[Any], list[Problem]] | None:
    """Connect a :class:`~asczoo.data.dataset_base.ClipDataset` to a complete cache; None if none covers it.

    Returns the store, the clips to serve and the problems of the clips left out. The cache counts as
    covering the dataset only if a manifest of the same dataset identity has every listed file with an
    unchanged fingerprint (or records it as bad with an unchanged fingerprint). Nothing is extracted
    here: :func:`asczoo.data.datasets.create_dataset` extracts first when this returns None.
    """
    cache = Path(dataset.cache_dir)
    key = _dataset_key(dataset.identity)
    current = {c.file: fingerprint(c.file, c.path) for c in dataset.entries}

    def find() -> tuple[Path, dict[str, Any]] | None:
        for dtype in DTYPES:
            path = _config_dir(cache, dataset.frontend, dtype) / f"{key}{MANIFEST_SUFFIX}"
            manifest = _read_manifest(path) if path.is_file() else None
            if manifest is None:
                continue
            known = {f: v[0] for f, v in manifest["files"].items()}
            known.update({f: v["fingerprint"] for f, v in manifest["skipped"].items()})
            if all(known.get(f) == fp for f, fp in current.items()):
                return path.parent, manifest
        return None

    found = find()
    if found is None:
        return None
    config_dir, manifest = found
    bad = [Problem.from_dict(p) for f in current if f in manifest["skipped"] for p in manifest["skipped"][f]["problems"]]
    if not dataset.skip_bad:
        raise_if_errors(bad, f"dataset {dataset.name!r} ({dataset.split}) from cache {config_dir}",
                        "These files were left out when the cache was built with --skip-bad.")
    store = FeatureStore(config_dir, manifest)
    clips = [c for c in dataset.entries if c.file in store]
    return store, clips, [p for p in bad if p.severity == ERROR]


def load_normalization(
    cache_dir: str | os.PathLike,
    frontend: Frontend | Mapping[str, Any] | str | None = None,
    *,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's ``(mean, std)``, each float32 ``(3, n_mels)``, from a cache's manifest.

    With several complete extractions in ``cache_dir``, narrow the choice with ``frontend`` (instance
    or config), ``dataset`` (plugin name) and ``root``; an ambiguous or empty choice is an error that
    lists what is there.
    """
    cache = Path(cache_dir)
    wanted_config = resolve_frontend(frontend).config if frontend is not None else None
    wanted_root = str(Path(root).resolve()) if root is not None else None
    found = []
    for path in sorted(cache.glob(f"*/*{MANIFEST_SUFFIX}")):
        manifest = _read_manifest(path)
        if manifest is None:
            continue
        ident = manifest["identity"]
        if wanted_config is not None and manifest["frontend"] != wanted_config:
            continue
        if dataset is not None and ident.get("dataset") != dataset:
            continue
        if wanted_root is not None and ident.get("root") != wanted_root:
            continue
        found.append((path, manifest))
    if not found:
        raise FileNotFoundError(f"no complete feature cache in {cache} matches (frontend={wanted_config}, "
                                f"dataset={dataset}, root={wanted_root}); run `asczoo extract` first")
    if len(found) > 1:
        listed = "; ".join(f"{p} (dataset {m['identity'].get('dataset')}, root {m['identity'].get('root')})"
                           for p, m in found)
        raise ValueError(f"{len(found)} extractions in {cache} match; pass frontend, dataset or root: {listed}")
    stats = found[0][1]["normalization"]
    return torch.tensor(stats["mean"], dtype=torch.float32), torch.tensor(stats["std"], dtype=torch.float32)


def compute_normalization(dataset: Any, *, workers: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` per (channel, mel band) over every item of a dataset (no cache needed)."""
    items = ordered_map(dataset.__getitem__, list(range(len(dataset))), workers=workers, progress=progress,
                        desc="statistics")
    try:
        mean, std, _ = feature_statistics((features for features, _ in items), what="compute_normalization: the dataset's items")
    except ValueError:
        raise ValueError("compute_normalization: the dataset is empty") from None
    return mean, std
