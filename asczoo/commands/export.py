"""``asczoo export MODEL --format onnx OUT.onnx``: a trained model as an ONNX file, checked with onnxruntime."""

from __future__ import annotations

COMMAND = "export"
HELP = "export a model to ONNX (features -> logits), verified against PyTorch with onnxruntime"

# A file is written only after it is verified (at batches 1, 2, 3 and 7 with a dynamic batch axis); a
# failed export or verification prints one line naming the batch and leaves OUT as it was.


def add_arguments(parser) -> None:
    from asczoo.deploy.export import DEFAULT_OPSET, FORMATS

    parser.add_argument("model", help="a trained model: folder, hf-hub:org/name[@revision], org/name, or arch.tag")
    parser.add_argument("output", metavar="OUT", help="file to write, e.g. model.onnx")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset version ({DEFAULT_OPSET})")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size (2) instead of a dynamic axis")
    parser.add_argument("--no-optimize", action="store_true", help="skip the ONNX graph optimiser")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not run the file with onnxruntime (the batch axis is still captured as dynamic, "
                             "and a model that cannot keep it dynamic still fails to export)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of MODEL")
    parser.add_argument("--with-frontend", action="store_true",
                        help="start the graph from the waveform (batch, channels, samples) at the model's sample "
                             "rate: STFT, mel filter bank, log, segments and normalisation inside (dynamic batch)")
    parser.add_argument("--channels", type=int, default=2, choices=(1, 2),
                        help="with --with-frontend: waveform channels the graph takes (2; 1 = mono, duplicated)")


def waveform_meta(path) -> str:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}["asczoo.waveform"]


def run(args) -> int:
    from asczoo.atomic import exclusive_output

    # one writer per output file; what a killed earlier export left beside it is removed first
    with exclusive_output(args.output):
        return _export(args)


def _export(args) -> int:
    import json

    from asczoo.deploy.export import export_onnx
    from asczoo.models.factory import load_model

    model = load_model(args.model, revision=args.revision, device="cpu")
    if args.with_frontend:
        from asczoo.deploy.waveform_export import export_onnx_with_frontend

        if args.static_batch:
            raise ValueError("--with-frontend exports a dynamic batch axis; drop --static-batch")
        result = export_onnx_with_frontend(model, args.output, channels=args.channels, opset=args.opset,
                                           optimize=not args.no_optimize, verify=not args.no_verify)
        check = (f"; onnxruntime matches PyTorch's frontend and model within {result.max_abs_diff:.2g} at batches "
                 "1, 2, 3 and 7" if result.max_abs_diff is not None else "; not verified with onnxruntime")
        meta = json.loads(waveform_meta(result.path))
        print(f"wrote {result.path} ({model.name}, input waveform (batch, {meta['shape'][1]}, {meta['shape'][2]}) "
              f"at {meta['sample_rate']} Hz){check}")
        return 0
    result = export_onnx(model, args.output, opset=args.opset, dynamic_batch=not args.static_batch,
                         optimize=not args.no_optimize, verify=not args.no_verify)
    if result.max_abs_diff is not None:
        batches = "batches 1, 2, 3 and 7" if not args.static_batch else "batch 2"
        check = f"; onnxruntime matches PyTorch within {result.max_abs_diff:.2g} at {batches}"
    else:
        check = "; not verified with onnxruntime"
    print(f"wrote {result.path} ({model.name}, input (batch, {', '.join(map(str, model.input_shape))})){check}")
    return 0
