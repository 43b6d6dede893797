"""``asczoo quantize RUN_OR_MODEL --to int8|fp16``: a CPU int8 (or fp16) copy with a parity report."""

from __future__ import annotations

import json
import os
from pathlib import Path

COMMAND = "quantize"
HELP = "quantise a trained model (static int8 calibrated on training clips, or fp16) and report parity"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a saved model folder")
    parser.add_argument("--to", choices=("int8", "fp16"), required=True, help="target precision")
    parser.add_argument("--out", metavar="DIR", help="output model folder (default: RUN_OR_MODEL-int8 / -fp16)")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its final model)")
    parser.add_argument("--data", metavar="ROOT", help="dataset root (default: the one the run was trained on)")
    parser.add_argument("--dataset", default=None, help="dataset plugin (default: the one the model was trained on)")
    parser.add_argument("--fold", type=int, default=None, help="fold (default: the model's)")
    parser.add_argument("--cache", metavar="DIR", default=None, help="feature cache (default: the run's)")
    parser.add_argument("--calibration-clips", type=int, default=256, metavar="N",
                        help="training clips to calibrate int8 activation ranges on (default %(default)s)")
    parser.add_argument("--split", default="evaluate", help="labelled split of the parity report (default %(default)s)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity report (no data needed for fp16)")
    parser.add_argument("--keep-float", action="append", default=[], metavar="PART",
                        help="keep a part in float32 (e.g. relations), mixed precision (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration clips' draw")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def _dataset(model, defaults, args, split: str):
    from asczoo.data.datasets import create_dataset

    root = args.data or defaults.get("root")
    if root is None:
        raise ValueError(f"{args.model}: no data root known; pass --data ROOT (training clips calibrate int8, "
                         f"the {args.split!r} split gives the parity report)")
    name = args.dataset or defaults.get("dataset")
    if name is None:
        raise ValueError(f"{args.model}: the dataset it was trained on is not recorded; pass --dataset NAME")
    fold = args.fold if args.fold is not None else defaults.get("fold", 1)
    cache = args.cache or (defaults.get("cache") if not args.data else None)
    ds = create_dataset(name, root, split=split, fold=fold, frontend=model.frontend_config, cache_dir=cache,
                        **(defaults.get("options") or {}))
    if list(ds.classes) != list(model.classes):
        raise ValueError(f"dataset {name!r} has classes {list(ds.classes)}; the model has {list(model.classes)}")
    return ds


def _batches(ds, indices, batch_size=32, labels=False):
    import torch

    for start in range(0, len(indices), batch_size):
        items = [ds[i] for i in indices[start:start + batch_size]]
        x = torch.stack([torch.as_tensor(f) for f, _ in items]).float()
        yield (x, torch.as_tensor([int(y) for _, y in items])) if labels else x


def run(args) -> int:
    import torch

    from asczoo.atomic import atomic_directory, atomic_write_text
    from asczoo.analysis.complexity import measure
    from asczoo.training.evaluation import resolve_model
    from asczoo.deploy.quantize import check_quantizable, parity, quantize_fp16, quantize_int8

    if args.calibration_clips < 1:
        raise ValueError(f"--calibration-clips must be at least 1, got {args.calibration_clips}")
    source = Path(args.model)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a run directory or saved model folder")
    model, defaults = resolve_model(source, stage=args.stage)
    model = model.cpu().eval()
    out = Path(args.out) if args.out else source.with_name(f"{source.name}-{args.to}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    if args.to == "int8":
        check_quantizable(model, args.keep_float)  # refuse before reading any data
        train = _dataset(model, defaults, args, "train")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
        quantized = quantize_int8(model, _batches(train, order[: args.calibration_clips]),
                                  keep_float=args.keep_float).model
    else:
        quantized = quantize_fp16(model)
    report = None
    if not args.no_parity:
        ds = _dataset(model, defaults, args, args.split)
        report = {"split": args.split, "scheme": args.to,
                  **parity(model, quantized, _batches(ds, list(range(len(ds))), labels=True))}
    # everything is written into a folder beside OUT and moved into place last: an error leaves no half model
    with atomic_directory(out) as staging:
        quantized.save_pretrained(staging)
        result = measure(quantized)
        files = {"complexity.json": result.to_dict()}
        if report is not None:
            files["parity.json"] = report
        for name, data in files.items():
            atomic_write_text(staging / name, json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} ({model.name}, {args.to}): {result.summary()}")
    if report is not None:
        print(f"parity on {report['clips']} {args.split} clips: accuracy {100 * report['float_accuracy']:.2f}% float, "
              f"{100 * report['quantized_accuracy']:.2f}% {args.to}; agreement {100 * report['agreement']:.2f}%")
    return 0
