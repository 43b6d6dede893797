"""``asczoo eval RUN_DIR_OR_MODEL --data ROOT``: overall and per-class accuracy and the confusion matrix."""

from __future__ import annotations

import argparse

COMMAND = "eval"
HELP = "evaluate a trained model (run directory or saved model folder): accuracy per class, confusion matrix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="RUN_DIR_OR_MODEL",
                        help="a run directory of `asczoo train` (its final model) or a saved model folder")
    parser.add_argument("--data", metavar="ROOT", help="dataset root (default: the one the run trained on)")
    parser.add_argument("--dataset", help="dataset plugin (default: the one the model was trained on)")
    parser.add_argument("--split", default="evaluate", choices=("train", "evaluate", "all"),
                        help="labelled split to evaluate (default %(default)s)")
    parser.add_argument("--fold", type=int, help="development-set fold (default: the training fold, else 1)")
    parser.add_argument("--stage", help="in a run directory, evaluate this stage's model (e.g. stage1)")
    parser.add_argument("--cache", metavar="DIR", help="feature cache (default: ROOT/.asczoo-cache if present)")
    parser.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--skip-bad", action="store_true", help="leave unreadable or broken files out (reported)")
    parser.add_argument("--png", metavar="PATH", help="also write the confusion matrix as a PNG (needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from asczoo.training.evaluation import confusion_png, evaluate

    result = evaluate(args.model, args.data, dataset=args.dataset, split=args.split, fold=args.fold,
                      cache_dir=args.cache, stage=args.stage, batch_size=args.batch_size, device=args.device,
                      skip_bad=args.skip_bad, workers=args.workers)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.format())
    if args.png:
        if confusion_png(result, args.png):
            print(f"confusion matrix: {args.png}", file=sys.stderr)
        else:
            print("asczoo eval: no PNG written: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
    return 0
