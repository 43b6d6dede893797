"""``asczoo complexity NAME_OR_MODEL``: parameters, parameter bytes and MACs, against the DCASE limits."""

from __future__ import annotations

import json
import os

COMMAND = "complexity"
HELP = "count parameters, parameter bytes and MACs per clip and per second (DCASE 2024/2025 Task 1 limits)"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="NAME_OR_MODEL",
                        help="registry model name, a saved model folder, a run directory or a Hub id")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                        help="precision the parameter bytes are counted at (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value of a registry model, e.g. backbone.width=16 (repeatable)")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its final model)")
    parser.add_argument("--layers", action="store_true", help="also print the per-layer table")
    parser.add_argument("--dcase", action="store_true",
                        help="also print the figure the DCASE 2025 organisers' counter gives (torchinfo, as the "
                             "inference template's complexity.py counts) and why it differs from asczoo's")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def load_any(spec: str, *, overrides=None, stage: str | None = None):
    """A registry name (built with random weights, which do not change the counts), or a trained model
    (folder, run directory, Hub id)."""
    from asczoo import recipes
    from asczoo.models.factory import create_model

    if not os.path.exists(spec) and "/" not in spec and ":" not in spec:
        arch, _ = recipes.split_name(spec)
        if arch in recipes.registry().names(include_unavailable=True):
            return create_model(spec, overrides=overrides or None)
    if overrides:
        raise ValueError("--set applies to registry names only; a trained model is counted as saved")
    if os.path.isdir(spec):
        from asczoo.training.evaluation import resolve_model

        return resolve_model(spec, stage=stage)[0]
    from asczoo.models.factory import load_model

    return load_model(spec, device="cpu")


def run(args) -> int:
    from asczoo.analysis.complexity import format_table, measure
    from asczoo.recipes.overrides import parse_overrides

    model = load_any(args.model, overrides=parse_overrides(args.overrides), stage=args.stage).to("cpu")
    result = measure(model, precision=args.precision)
    official = None
    if args.dcase:
        from asczoo.analysis.official_complexity import official_count

        official = official_count(model)
    if args.json:
        out = result.to_dict(layers=args.layers)
        if official is not None:
            out["dcase_official"] = official
        print(json.dumps(out, indent=2))
        return 0
    print(f"{getattr(model, 'name', args.model)}: input (1, {', '.join(map(str, model.input_shape))})")
    print(result.summary())
    if official is not None:
        if not official["available"] or official.get("macs") is None:
            print(f"DCASE organisers' counter (torchinfo): not computed: {official['note']}")
        else:
            print(f"DCASE organisers' counter (torchinfo): {official['macs'] / 1e6:.3f} M MACs per clip, "
                  f"{official['param_bytes']:,} parameter bytes as packaged (asczoo: {result.macs_per_clip / 1e6:.3f} M)")
            print(f"  why they differ: {official['note']}")
    if args.layers:
        print()
        print(format_table(result))
    return 0
