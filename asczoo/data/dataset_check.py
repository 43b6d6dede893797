"""``check_dataset``: every problem of a dataset's listings and audio files, all splits, one report.

``asczoo check-data`` runs it. It opens each split without a feature cache (listing only) and then
checks every listed file once (:func:`asczoo.data.checks.check_files`).
"""

from __future__ import annotations

from typing import Any

from asczoo.data.checks import DataError, Problem, Report, check_files, split_overlap
from asczoo.data.datasets import SPLITS, create_dataset, dataset_defaults
from asczoo.data.frontend import resolve_frontend


def check_dataset(
    name: str,
    root: str,
    *,
    fold: int | None = 1,
    frontend: Any = None,
    workers: int = 0,
    progress: bool = True,
    **options: Any,
) -> Report:
    """Check the listing of every split and every listed audio file of dataset ``name`` at ``root``."""
    defaults = dataset_defaults(name, root, **options)  # the folder plugin's follow the recordings there
    fe = resolve_frontend(frontend if frontend is not None else (defaults["frontend"] or None))
    report = Report()
    files: dict[str, str] = {}
    per_split: dict[str, list[str]] = {}
    for split in SPLITS:
        try:
            ds = create_dataset(name, root, split=split, fold=fold, frontend=fe, skip_bad=True, **options)
        except DataError as exc:
            report.add(exc.problems or [Problem(str(root), "missing-setup", str(exc))])
            continue
        report.add(ds.skipped)
        listing = ds.entries  # as listed, before any audio was read
        per_split[split] = [clip.file for clip in listing]
        for clip in listing:
            files.setdefault(clip.file, clip.path)
    if "train" in per_split and "evaluate" in per_split:
        report.add(split_overlap(per_split["train"], per_split["evaluate"], source=f"fold {fold}"))
    # a mono dataset's clips are not warned about, nor mono clips for a model made for mono recordings
    channels = fe.config.get("channels", defaults["channels"] or 2)
    report.add(check_files(files, fe, workers=workers, progress=progress, channels=channels))
    report.files_checked = len(files) + len([p for p in report.problems if p.kind == "missing"])
    return report
