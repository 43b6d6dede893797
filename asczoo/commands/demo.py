"""``asczoo demo MODEL [--port P]``: the model's demo page (Gradio) on this machine."""

from __future__ import annotations

COMMAND = "demo"
HELP = "serve a model's demo page (Gradio): upload or record a clip, see its classes, timeline and explain picture"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a trained model: folder, hf-hub:org/name[@revision], org/name, or arch.tag")
    parser.add_argument("--port", type=int, default=7860, metavar="P", help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every "
                             "interface)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="P",
                        help="multi-label models: the classes shown are those with probability >= P (0.5)")
    parser.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                        help="window hop for recordings longer than the model's clip (default: one clip)")
    parser.add_argument("--smooth", type=int, default=1, metavar="N",
                        help="timeline: median of each class's probability over N windows (odd; default 1: none)")
    parser.add_argument("--device", default=None, metavar="D", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL")


def run(args) -> int:
    from asczoo.deploy.demo import build_demo

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    page = build_demo(args.model, revision=args.revision, device=args.device, threshold=args.threshold,
                      hop_seconds=args.hop, smooth=args.smooth)
    print(f"asczoo demo: {page.demo_model.title} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        page.launch(server_name=args.host, server_port=args.port, quiet=True, footer_links=["api"])
    finally:
        page.demo_model.close()
    return 0
