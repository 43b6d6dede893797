"""``asczoo finetune MODEL --data ROOT``: a trained model with a new head, trained on one's own data
(the ``finetune`` training recipe; see :mod:`asczoo.training.finetuning`)."""

from __future__ import annotations

import argparse

COMMAND = "finetune"
HELP = "fine-tune a trained model (folder, org/name, hf-hub:) on a dataset: a new head for its classes; resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="the parent: a saved model folder, org/name or hf-hub:org/name[@rev]")
    parser.add_argument("--data", metavar="ROOT", required=True, help="dataset root (class sub-folders or a labels table)")
    parser.add_argument("--dataset", metavar="NAME", default="folder",
                        help="dataset plugin (default %(default)s; `asczoo plugins` lists them)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/finetune-TIMESTAMP)")
    parser.add_argument("--revision", help="a Hub branch, tag or commit of MODEL")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, repeatable: stages.finetune.epochs=30, "
                             "stages.finetune.optimizer.lr=0.003, data.options.evaluate_fraction=0.2")
    parser.add_argument("--show", action="store_true", help="print the resolved recipe (parent and overrides) and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch)")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + (["engine.progress=false"] if args.no_progress else [])
    if args.show:
        import yaml

        from asczoo.recipes import training_recipes
        from asczoo.training.finetuning import RECIPE, finetune_overrides

        merged = finetune_overrides(args.model, revision=args.revision, dataset=args.dataset, overrides=overrides)
        name, recipe = training_recipes.load(RECIPE, merged)
        print(yaml.safe_dump({name: recipe}, sort_keys=False).rstrip())
        return 0
    from asczoo.training.finetuning import finetune

    finetune(args.model, data=args.data, out=args.out, dataset=args.dataset, revision=args.revision,
             overrides=overrides, resume=args.resume)
    return 0
