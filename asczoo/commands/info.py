"""``asczoo info NAME``: resolved recipe, parameter counts, feature-map shapes, relation blocks."""

from __future__ import annotations

import json

COMMAND = "info"
HELP = "show a model's resolved recipe, parameter counts and feature-map shape after every stage"


def add_arguments(parser) -> None:
    parser.add_argument("name", help="registry model name (see `asczoo list`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. relation.k=8 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the information as JSON")


def stage_shapes(model, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """Feature-map shape ``(N, C, F, T)`` after the stem and every stage, for the model's default input."""
    import torch

    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for label, path in model.backbone.stage_paths():
        module = model.backbone.get_submodule(path)

        def hook(_m, _a, out, label=label):
            shapes.append((label, tuple(model.layout.to_segments(out).shape[1:])))

        handles.append(module.register_forward_hook(hook))
    try:
        model.eval()
        with torch.no_grad():
            model.forward_features(torch.zeros(batch, *model.input_shape))
    finally:
        for h in handles:
            h.remove()
    return shapes


def describe(model) -> dict:
    from asczoo.analysis.complexity import measure

    counts = model.parameter_counts()
    relations = {}
    for placement, block in model.relations.items():
        info = dict(block.describe()) if hasattr(block, "describe") else {"type": type(block).__name__}
        info.setdefault("params", sum(p.numel() for p in block.parameters()))
        info["position"] = model.relation_positions[placement]
        info["module"] = model.backbone.block_path(placement)
        relations[placement] = info
    return {
        "name": model.name,
        "recipe": model.recipe,
        "input_shape": list(model.input_shape),
        "parameters": counts,
        "paper_params_m": (model.recipe.get("paper") or {}).get("params_m"),
        "stages": [{"stage": label, "shape": list(shape)} for label, shape in stage_shapes(model)],
        "relations": relations,
        "complexity": measure(model).to_dict(),
    }


def run(args) -> int:
    import yaml

    from asczoo.models.factory import create_model
    from asczoo.recipes.overrides import parse_overrides

    model = create_model(args.name, overrides=parse_overrides(args.overrides) or None)
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}: {info['recipe'].get('description', '')}")
    print("\nrecipe:")
    print("  " + yaml.safe_dump(info["recipe"], sort_keys=False).rstrip().replace("\n", "\n  "))
    c = info["parameters"]
    paper = f" (paper: {info['paper_params_m']} M)" if info["paper_params_m"] else ""
    print(f"\nparameters: {c['total'] / 1e6:.3f} M{paper}  "
          f"[backbone {c['backbone']:,}, relation blocks {c['relations']:,}, head {c['head']:,}]")
    x = info["complexity"]
    print(f"complexity: {x['macs_per_clip'] / 1e6:.3f} M MACs per clip, {x['parameter_bytes'] / 1024:.1f} kB at fp32; "
          f"DCASE 2024/2025 limits {'hold' if x['dcase_limits']['holds'] else 'do not hold'} "
          "(`asczoo complexity` for int8/fp16 and per layer)")
    print(f"\ninput (N, C, F, T): {tuple(info['input_shape'])}")
    print("feature map after each stage (N, C, F, T):")
    for row in info["stages"]:
        print(f"  {row['stage']:<11} {tuple(row['shape'])}")
    if info["relations"]:
        print("\nrelation blocks:")
        for placement, rel in info["relations"].items():
            details = ", ".join(f"{k}={v}" for k, v in rel.items() if k not in ("module",))
            print(f"  {placement} ({rel['module']}): {details}")
    return 0
