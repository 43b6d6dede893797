"""``asczoo cv RECIPE --data ROOT``: train on every official fold, then the mean and std over folds
(see :mod:`asczoo.training.crossval`)."""

from __future__ import annotations

import argparse

COMMAND = "cv"
HELP = "cross-validate a training recipe over its dataset's official folds (resumable per fold); mean and std"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="training recipe name, or a YAML file (FILE:NAME)")
    parser.add_argument("--data", metavar="ROOT", help="dataset root (default: the recipe's data.root)")
    parser.add_argument("--out", metavar="DIR", help="where the fold runs go: DIR/fold1 ... (default runs/RECIPE-cv)")
    parser.add_argument("--folds", metavar="K,K,...", help="only these folds (default: every official fold)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value for every fold, repeatable (as for `asczoo train`)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch)")


def run(args: argparse.Namespace) -> int:
    import sys

    from asczoo.training.crossval import cross_validate

    folds = None
    if args.folds:
        try:
            folds = [int(k) for k in args.folds.split(",") if k.strip()]
        except ValueError:
            print(f"asczoo cv: error: --folds {args.folds!r}: expected fold numbers like 1,2,3", file=sys.stderr)
            return 2
    overrides = list(args.overrides) + (["engine.progress=false"] if args.no_progress else [])
    summary = cross_validate(args.recipe, data=args.data, out=args.out, folds=folds, overrides=overrides)
    print(summary.format())
    print(f"asczoo cv: {summary.out / 'cv.json'}, {summary.out / 'cv.md'}")
    return 0
