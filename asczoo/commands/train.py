"""``asczoo train RECIPE``: run a training recipe (see :mod:`asczoo.training` and :mod:`asczoo.training_recipes`)."""

from __future__ import annotations

import argparse

COMMAND = "train"
HELP = "train by a recipe (two-stage paper recipes, quickstart, or a YAML file); resumable, torchrun-ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", metavar="RECIPE",
                        help="training recipe name (see --list), or a YAML file (FILE:NAME picks one of several)")
    parser.add_argument("--data", metavar="ROOT", help="dataset root (default: the recipe's data.root)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/RECIPE-TIMESTAMP)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (starts it if there is none)")
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: accept another dataset root than the run was started with")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, repeatable: stages.1.epochs=3, stages.stage1.optimizer.lr=0.05, "
                             "engine.compile=true, seed=1")
    parser.add_argument("--fold", type=int, metavar="K",
                        help="train on the dataset's official fold K (the same as --set data.fold=K); "
                             "`asczoo cv` trains every fold")
    parser.add_argument("--list", action="store_true", help="list the training recipes and exit")
    parser.add_argument("--show", action="store_true", help="print the resolved recipe (overrides applied) and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch)")


def run(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from asczoo import training_recipes

    if args.list:
        reg = training_recipes.registry()
        names = reg.names(include_unavailable=True)
        width = max((len(n) for n in names), default=0)
        for name in names:
            entry = reg.entries[name]
            note = f"[unavailable] {entry.unavailable}" if entry.unavailable else entry.description
            print(f"{name:<{width}}  {note}")
        return 0
    if not args.recipe:
        print("asczoo train: error: name a RECIPE (see `asczoo train --list`)", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.fold is not None:
        if args.fold < 1:
            print(f"asczoo train: error: --fold must be a positive integer, got {args.fold}", file=sys.stderr)
            return 2
        overrides.append(f"data.fold={args.fold}")
    if args.no_progress:
        overrides.append("engine.progress=false")
    if args.show:
        name, recipe = training_recipes.load(args.recipe, overrides)
        print(yaml.safe_dump({name: recipe}, sort_keys=False).rstrip())
        return 0
    from asczoo.training import train

    train(args.recipe, data=args.data, out=args.out, resume=args.resume, overrides=overrides,
          allow_data_change=args.allow_data_change)
    return 0
