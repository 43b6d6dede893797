"""``asczoo synth OUT_DIR``: write a synthetic dataset in the DCASE 2019 layout (see :mod:`asczoo.synth`)."""

from __future__ import annotations

import argparse

COMMAND = "synth"
HELP = "write a synthetic dataset (scenes or the relational task) in the DCASE 2019 layout, deterministic by seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (must be new, empty or an earlier synth)")
    parser.add_argument("--clips", type=int, default=400, help="number of clips (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--task", choices=("scenes", "relational"), default="scenes",
                        help="scenes: DCASE-named scene classes; relational: same vs different event pair")
    parser.add_argument("--classes", type=int, help="scenes: use the first K of the 10 DCASE classes")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default %(default)s)")
    parser.add_argument("--sample-rate", type=int, default=48000, help="default %(default)s")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    parser.add_argument("--overwrite", action="store_true", help="write into a directory holding files asczoo synth did not write (its meta.csv and fold lists are replaced; no file is deleted but those of an earlier synthesis)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from asczoo.synth import synthesize

    try:
        info = synthesize(args.out_dir, clips=args.clips, seed=args.seed, task=args.task, seconds=args.seconds,
                          sample_rate=args.sample_rate, classes=args.classes, workers=args.workers,
                          progress=not args.no_progress, overwrite=args.overwrite)
    except FileExistsError as exc:
        print(f"asczoo synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"{info.clips} {info.task} clips ({len(info.classes)} classes: {', '.join(info.classes)}) in {info.root}: "
          f"fold 1 has {info.train} training and {info.evaluate} evaluation clips")
    print(f"load with: asczoo.create_dataset('dcase2019-task1a', {str(info.root)!r})")
    return 0
