"""``asczoo predict MODEL PATH...``: scene labels for audio files, in the DCASE submission format."""

from __future__ import annotations

import sys

COMMAND = "predict"
HELP = "classify audio files or folders; writes a DCASE submission file and per-class scores"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="a trained model: folder, hf-hub:org/name[@revision], org/name, or arch.tag")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="audio files (.wav, .flac), folders of them, or a DCASE setup table "
                        "(EVAL/evaluation_setup/fold1_test.csv: its files, in its order, named as listed)")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="DCASE submission file (filename<TAB>scene_label); default: print to stdout")
    parser.add_argument("--scores", metavar="FILE",
                        help="per-class probabilities file (default with --output: OUTPUT.scores.tsv)")
    parser.add_argument("--dcase-output", metavar="FILE",
                        help="also write DCASE 2024/2025 Task 1 output.csv: filename, scene_label and one probability "
                             "column per class, tab-separated (single-label models); the columns, order and names of "
                             "the DCASE 2025 inference template's evaluate_submission.py when PATH is fold1_test.csv")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="P",
                        help="multi-label models: print every label with probability >= P (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="clip windows per forward pass (16)")
    parser.add_argument("--device", default=None, metavar="D", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                        help="window hop for recordings longer than the model's clip (default: one clip)")
    parser.add_argument("--timeline", metavar="CSV",
                        help="one recording: write one row per window (start and end seconds, label, every class's "
                             "probability; multi-label: every label >= --threshold) as CSV with a header row")
    parser.add_argument("--timeline-plot", metavar="PNG",
                        help="one recording: draw the probabilities over time with label bands (needs matplotlib)")
    parser.add_argument("--smooth", type=int, default=1, metavar="N",
                        help="timeline: median of each class's probability over N windows (odd; default 1: none)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="what runs the network: torch (default) or onnxruntime on the CPU (the model is exported "
                             "and verified first, 15-40 s; faster for the plain models on many clips, not for "
                             "ATReSN-Net: see asczoo/deploy/onnx_runtime.py)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch

    from asczoo.models.factory import load_model
    from asczoo.inference import (
        check_smooth, collect_audio_files, default_scores_path, format_multi_label, format_submission, labels_above,
        predict_files, write_dcase_output, write_scores, write_submission,
    )

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, got {args.threshold}")
    check_smooth(args.smooth)
    if args.smooth != 1 and not (args.timeline or args.timeline_plot):
        raise ValueError("--smooth applies to the timeline: add --timeline CSV or --timeline-plot PNG")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    files = collect_audio_files(args.paths)
    if (args.timeline or args.timeline_plot) and len(files) != 1:
        raise ValueError(f"--timeline and --timeline-plot follow one recording; PATH gave {len(files)} files: "
                         "name one audio file")
    if args.backend == "onnxruntime" and args.device not in (None, "cpu"):
        raise ValueError(f"--backend onnxruntime runs on the CPU; leave out --device {args.device} or use --backend torch")
    model = load_model(args.model, revision=args.revision, device="cpu" if args.backend == "onnxruntime" else device)
    if args.backend == "onnxruntime":
        from asczoo.deploy.onnx_runtime import onnx_runtime_model

        model = onnx_runtime_model(model, say=lambda line: print(f"asczoo predict: {line}", file=sys.stderr))
    multi_label = getattr(model, "task", "single-label") == "multi-label"
    if multi_label and args.dcase_output:
        raise ValueError(f"--dcase-output is the scene-classification output (one scene per file); "
                         f"{args.model} is a multi-label model: use --output and --threshold")

    def report(result) -> None:
        print(f"asczoo predict: skipped {result.name}: {result.error}", file=sys.stderr)

    results = predict_files(model, files, batch_size=args.batch_size, hop_seconds=args.hop,
                            progress=False if args.quiet else None, on_error=report)
    if multi_label:
        from asczoo.atomic import atomic_write_text

        if args.output:
            atomic_write_text(args.output, format_multi_label(results, args.threshold))
        else:
            for r in results:
                if r.prediction is not None:
                    found = labels_above(r.prediction, args.threshold)
                    shown = ", ".join(f"{c} {p:.3f}" for c, p in found) or f"(no label >= {args.threshold})"
                    sys.stdout.write(f"{r.name}\t{shown}\n")
    elif args.output:
        write_submission(results, args.output)
    else:
        text = format_submission(results)
        if hasattr(sys.stdout, "buffer"):  # names that are not UTF-8 go out as the bytes they are on disk
            sys.stdout.flush()
            sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(text)
    if args.dcase_output:
        write_dcase_output(results, model.classes, args.dcase_output)
    scores = args.scores or (default_scores_path(args.output) if args.output else None)
    if scores:
        write_scores(results, model.classes, scores)
    if (args.timeline or args.timeline_plot) and results[0].prediction is not None:
        _write_timeline(args, model, results[0], multi_label)
    failed = sum(r.error is not None for r in results)
    done = len(results) - failed
    where = f" -> {args.output}" + (f", scores {scores}" if scores else "") if args.output else ""
    print(f"asczoo predict: {done} file(s) classified{where}"
          + (f"; {failed} file(s) skipped (see above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _write_timeline(args, model, result, multi_label: bool) -> None:
    """``--timeline`` and ``--timeline-plot`` from the windows ``predict_files`` kept."""
    from asczoo.inference import plot_timeline, timeline_rows, write_timeline

    rows = timeline_rows(model.classes, result.starts, result.ends, result.window_probabilities, smooth=args.smooth,
                         threshold=args.threshold if multi_label else None)
    if args.timeline:
        write_timeline(rows, model.classes, args.timeline, multi_label=multi_label)
        print(f"asczoo predict: timeline of {len(rows)} window(s) -> {args.timeline}", file=sys.stderr)
    if args.timeline_plot:
        smoothed = f", median of {args.smooth} windows" if args.smooth > 1 else ""
        if plot_timeline(rows, model.classes, args.timeline_plot, title=f"{result.name}{smoothed}"):
            print(f"asczoo predict: timeline plot -> {args.timeline_plot}", file=sys.stderr)
        else:
            print("asczoo predict: no timeline plot written: matplotlib is not installed (pip install matplotlib)",
                  file=sys.stderr)
