"""``asczoo extract ROOT --dataset NAME``: compute a dataset's features once into a feature cache.

Also home of the options the data commands share (frontend and dataset options), which
``check-data`` imports.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from asczoo import safe_yaml

COMMAND = "extract"
HELP = "compute a dataset's features once (in parallel, resumable) into a feature cache, with training statistics"


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values are read as YAML scalars or lists."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = safe_yaml.safe_load(value) if value.strip() else None
    return out


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the data commands: ROOT, dataset, fold, frontend, options, workers."""
    parser.add_argument("root", metavar="ROOT", help="dataset directory")
    parser.add_argument("--dataset", default="dcase2019-task1a",
                        help="dataset plugin (dcase2019-task1a, dcase2018-task1a, folder, ...); default %(default)s")
    parser.add_argument("--fold", default="1",
                        help="development-set fold (default 1); 'none' for a location-keeping split of meta.csv")
    parser.add_argument("--model", help="use the frontend of this registry model (default: dcase-logmel defaults)")
    parser.add_argument("--frontend", action="append", metavar="KEY=VALUE",
                        help="frontend option, repeatable (e.g. --frontend sample_rate=16000); 'plugin=NAME' picks another")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="dataset plugin option, repeatable (e.g. --option labels=my.tsv)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def data_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``fold``, ``frontend`` and plugin ``options`` from parsed :func:`add_data_arguments`."""
    from asczoo.data.frontend import create_frontend

    fold_text = str(args.fold).strip().lower()
    if fold_text in ("none", "null", ""):
        fold = None
    elif fold_text.isdigit() and int(fold_text) > 0:
        fold = int(fold_text)
    else:
        raise ValueError(f"--fold: expected a positive integer or 'none', got {args.fold!r}")
    from asczoo.data.datasets import dataset_defaults

    options = parse_assignments(args.option, "--option")
    # the dataset's own frontend settings (its sample rate, clip length, segments; the folder plugin's
    # follow the recordings at ROOT) unless a model is named
    config: dict[str, Any] = {} if args.model else dataset_defaults(args.dataset, args.root, **options)["frontend"]
    if args.model:
        from asczoo.models.factory import model_recipe

        config.update(model_recipe(args.model)["frontend"])
    config.update(parse_assignments(args.frontend, "--frontend"))
    return {"fold": fold, "frontend": create_frontend(**config), "options": options}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--cache", help="cache directory (default: ROOT/.asczoo-cache)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="storage precision (default %(default)s: half the size)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out bad files (listed at the end) instead of stopping with an error")


def run(args: argparse.Namespace) -> int:
    from asczoo.data.checks import DataError
    from asczoo.data.feature_cache import extract

    data = data_arguments(args)
    try:
        info = extract(
            args.dataset, args.root, fold=data["fold"], frontend=data["frontend"], cache_dir=args.cache,
            workers=args.workers, dtype=args.dtype, skip_bad=args.skip_bad, progress=not args.no_progress,
            **data["options"],
        )
    except DataError as exc:
        print(f"asczoo extract: {exc}", file=sys.stderr)
        return 1
    for problem in info.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    for problem in info.warnings:
        print(str(problem), file=sys.stderr)
    print(f"{info.files} clips in {info.directory} ({info.shards_computed} shard(s) computed, "
          f"{info.shards_reused} reused, {len(info.skipped)} skipped)")
    print(f"manifest and normalisation statistics: {info.manifest}")
    return 0
