"""``asczoo synth OUT_DIR``: write a synthetic dataset in the DCASE 2019 layout (see :mod:`asczoo.synth`)."""

from __future__ import annotations

import argparse

COMMAND = "synth"
HELP = "write a synthetic dataset (scenes or the relational task) in the DCASE 2019 layout, deterministic by seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (must be new, empty or an earlier synth)")
    parser.add_argument("--layout", metavar="DATASET", default=None,
                        help="write the layout of this dataset plugin instead of DCASE 2019's: esc50, urbansound8k, "
                             "tau2020-mobile, tau2022-mobile, fsd50k (any dataset plugin with a synthesize writer)")
    parser.add_argument("--clips", type=int, default=None, help="number of clips (default 400; --layout: its own)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--task", choices=("scenes", "relational"), default="scenes",
                        help="scenes: DCASE-named scene classes; relational: same vs different event pair")
    parser.add_argument("--classes", type=int, help="scenes: use the first K of the 10 DCASE classes")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 10; --layout: the dataset's)")
    parser.add_argument("--sample-rate", type=int, default=None, help="default 48000 (--layout: the dataset's)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    parser.add_argument("--overwrite", action="store_true", help="write into a directory holding files asczoo synth did not write (its meta.csv and fold lists are replaced; no file is deleted but those of an earlier synthesis)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from asczoo.synth import synthesize

    if args.layout is not None:
        return _layout(args)
    try:
        info = synthesize(args.out_dir, clips=400 if args.clips is None else args.clips, seed=args.seed, task=args.task,
                          seconds=10.0 if args.seconds is None else args.seconds,
                          sample_rate=48000 if args.sample_rate is None else args.sample_rate,
                          classes=args.classes, workers=args.workers,
                          progress=not args.no_progress, overwrite=args.overwrite)
    except FileExistsError as exc:
        print(f"asczoo synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"{info.clips} {info.task} clips ({len(info.classes)} classes: {', '.join(info.classes)}) in {info.root}: "
          f"fold 1 has {info.train} training and {info.evaluate} evaluation clips")
    print(f"load with: asczoo.create_dataset('dcase2019-task1a', {str(info.root)!r})")
    return 0


def _layout(args: argparse.Namespace) -> int:
    """``--layout NAME``: the dataset plugin's own writer of a small dataset in its published layout."""
    import inspect
    import sys

    from asczoo import plugins
    from asczoo.datasets import dataset_defaults

    try:
        writer = dataset_defaults(args.layout)["synthesize"]
    except plugins.UnknownPartError as exc:
        print(f"asczoo synth: error: --layout: {exc}", file=sys.stderr)
        return 2
    if writer is None:
        print(f"asczoo synth: error: dataset {args.layout!r} has no synthetic-layout writer", file=sys.stderr)
        return 2
    accepted = inspect.signature(writer).parameters
    options = {"seed": args.seed, "overwrite": args.overwrite}
    for key, value in (("clips", args.clips), ("seconds", args.seconds), ("sample_rate", args.sample_rate),
                       ("classes", args.classes)):
        if value is None:
            continue
        if key not in accepted:
            print(f"asczoo synth: error: --{key.replace('_', '-')} does not apply to --layout {args.layout}",
                  file=sys.stderr)
            return 2
        options[key] = value
    try:
        info = writer(args.out_dir, **options)
    except FileExistsError as exc:
        print(f"asczoo synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"{info.get('clips')} synthetic clips in the {args.layout} layout in {info.get('root', args.out_dir)}")
    print(f"try: asczoo check-data {args.out_dir} --dataset {args.layout}; asczoo train --list | grep {args.layout}")
    return 0
