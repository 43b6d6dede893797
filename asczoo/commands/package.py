"""``asczoo package RUN --name Lastname_INST_task1_1 --out DIR``: a DCASE 2025 Task 1 inference package."""

from __future__ import annotations

COMMAND = "package"
HELP = "write an installable DCASE 2025 Task 1 inference package (predict, load_model, load_inputs, get_model_for_device)"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="RUN", help="run directory or saved model folder: the general model")
    parser.add_argument("--name", required=True, help="submission label with index, e.g. Schmid_CPJKU_task1_1")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the package into")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its final model)")
    parser.add_argument("--device-model", action="append", default=[], metavar="DEVICE=MODEL",
                        help="a model for one recording device (a, b, c, s1 ... s6), e.g. a=runs/a (repeatable); "
                             "devices without one use the general model")
    parser.add_argument("--test-csv", default=None, metavar="FILE",
                        help="test split (tab-separated, with a filename column) shipped as resources/test.csv, "
                             "read by the template's evaluate_submission.py instead of downloading the official one")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier package in --out (one whose asczoo-package.json lists every file there)")


def run(args) -> int:
    from asczoo.deploy.dcase_package import write_package
    from asczoo.training.evaluation import resolve_model

    models = {"general": resolve_model(args.model, stage=args.stage)[0].cpu().eval()}
    sources = [args.model]
    for item in args.device_model:
        device, sep, path = item.partition("=")
        if not sep or not device or not path:
            raise ValueError(f"--device-model {item!r}: expected DEVICE=MODEL, e.g. a=runs/device-a")
        models[device] = resolve_model(path)[0].cpu().eval()
        sources.append(path)
    out = write_package(args.name, models, args.out, overwrite=args.overwrite, sources=sources,
                        test_csv=args.test_csv)
    print(f"wrote {out}: package {args.name.rsplit('_', 1)[0]}, module {args.name}, "
          f"models {', '.join(models)}; install with `pip install {out}`")
    return 0
