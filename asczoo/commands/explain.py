"""``asczoo explain MODEL AUDIO --out explain.png``: each relation block's neighbourhoods for one clip."""

from __future__ import annotations

COMMAND = "explain"
HELP = "draw which points each relation block takes as neighbours for one clip (PNG + JSON)"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a model: folder, hf-hub:org/name, org/name, arch.tag, or a registry name "
                                      "(fresh weights, for a look at the mechanism)")
    parser.add_argument("audio", help="an audio file (.wav, .flac); its first clip window is explained")
    parser.add_argument("--out", default="explain.png", metavar="PNG", help="picture to write (default explain.png)")
    parser.add_argument("--json", metavar="FILE", help="the same data as JSON (default: OUT with .json)")
    parser.add_argument("--point", type=int, action="append", metavar="I",
                        help="explain point I (flat index: segment-major, then mel, then frame) in every block; "
                             "repeatable (default: the --top points with the largest relation output)")
    parser.add_argument("--top", type=int, default=3, metavar="N", help="points per block when no --point (3)")
    parser.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="clip window start (default 0)")
    parser.add_argument("--device", default=None, metavar="D", help="torch device (default: cpu)")


def _load(spec: str, device: str):
    import os

    from asczoo import recipes
    from asczoo.models import factory
    from asczoo.models.factory import load_model

    arch, tag = recipes.split_name(spec)
    if tag is None and not os.path.exists(spec) and "/" not in spec and ":" not in spec and arch in factory.list_models():
        return factory.create_model(spec).to(device)
    return load_model(spec, device=device)


def run(args) -> int:
    import json
    from pathlib import Path

    from asczoo.atomic import atomic_write_text
    from asczoo.data.audio import read_audio
    from asczoo.analysis.explain import draw, explain
    from asczoo.inference import clip_windows, model_frontend

    if args.start < 0:
        raise ValueError(f"--start must be >= 0 seconds, got {args.start}")
    model = _load(args.model, args.device or "cpu")
    waveform, rate = read_audio(args.audio)
    first = int(round(args.start * rate))
    if first >= waveform.shape[-1]:
        raise ValueError(f"--start {args.start} s is past the end of {args.audio} ({waveform.shape[-1] / rate:.2f} s)")
    features = clip_windows(model_frontend(model), waveform[:, first:], rate)[0]
    result = explain(model, features, points=args.point, top=args.top)
    result["audio"] = str(args.audio)
    result["start_seconds"] = args.start
    draw(result, features, args.out)
    json_path = Path(args.json) if args.json else Path(args.out).with_suffix(".json")
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    print(f"explain: {result['prediction']['label']} ({result['prediction']['probability']:.2f}); "
          f"wrote {args.out} and {json_path}")
    return 0
