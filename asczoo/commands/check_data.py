"""``asczoo check-data ROOT --dataset NAME``: report every bad input, per file; non-zero if training would break."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asczoo.commands.extract import add_data_arguments, data_arguments

COMMAND = "check-data"
HELP = "check a dataset's lists and audio files (missing, unreadable, truncated, NaN, labels, ...) and report per file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from asczoo.atomic import atomic_write_text
    from asczoo.data.dataset_check import check_dataset

    data = data_arguments(args)
    report = check_dataset(args.dataset, args.root, fold=data["fold"], frontend=data["frontend"],
                           workers=args.workers, progress=not args.no_progress, **data["options"])
    print(report.format())
    if args.json:
        atomic_write_text(Path(args.json), report.to_json())
    if report.errors:
        print(f"asczoo check-data: {len(report.errors)} error(s) would break training", file=sys.stderr)
        return 1
    if args.strict and report.warnings:
        print(f"asczoo check-data: {len(report.warnings)} warning(s) and --strict", file=sys.stderr)
        return 1
    return 0
