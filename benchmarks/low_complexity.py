"""Low-complexity entries against the DCASE 2024/2025 Task 1 limits, and int8 against fp32 on the CPU.

Part 1 (counts, no timing): for ``lc-resnet-narrow`` and ``lc-atresn-narrow``, MACs per second of audio
and parameters (:mod:`asczoo.analysis.complexity`, torch's operator counter) and the bytes of the stored int8
tensors after :func:`asczoo.deploy.quantize.quantize_int8` (relation blocks kept in float32), against the limits
(30 M MACs/s, 128 kB).

Part 2 (timing): fp32 against static int8 (torch's x86/fbgemm quantized conv/linear kernels) for the
two entries and ``resnet18-3d``, single clip and batch of 64, median of interleaved repeats; and the
change in accuracy on a synthetic validation split. The models are untrained, so the split's labels are
the float model's own predictions on random clips: the fp32 accuracy is 100 % by construction and the
int8 accuracy is the agreement of the int8 model with the float one (what quantisation changes).
Calibration uses other random clips.

Run: ``python -m benchmarks.low_complexity [--quick]`` (``--quick``: resnet18-3d at test width, batch 4
instead of 64, one repeat); last line ``RESULT`` with both entries' MACs/s, parameters, int8 kB and
int8 speed-ups (batch 1 and the large batch) and the int8 agreement.
"""

from __future__ import annotations

import torch

from benchmarks import common

ENTRIES = {"lc-resnet-narrow": [], "lc-atresn-narrow": ["relations"]}
BASELINE = "resnet18-3d"


def build(name: str, quick: bool):
    import asczoo
    from asczoo.testing.tiny import tiny_overrides

    overrides = tiny_overrides() if quick and name == BASELINE else None
    return asczoo.create_model(name, overrides=overrides).eval()


def counts(quick: bool) -> dict[str, dict]:
    from asczoo.analysis.complexity import DCASE_MAX_MACS_PER_SECOND, DCASE_MAX_PARAM_BYTES, measure
    from asczoo.deploy.quantize import quantize_int8

    out = {}
    for name, keep in ENTRIES.items():
        model = build(name, quick)
        fp = measure(model, precision="int8")
        calibration = [torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(1))]
        stored = measure(quantize_int8(model, calibration, keep_float=keep).model)
        out[name] = {"macs_per_s": fp.macs_per_second, "params": fp.parameters, "int8_bytes": stored.parameter_bytes,
                     "ok": fp.macs_per_second <= DCASE_MAX_MACS_PER_SECOND and stored.parameter_bytes <= DCASE_MAX_PARAM_BYTES}
    rows = [[n, f"{r['macs_per_s'] / 1e6:.2f}", f"{r['params']:,}", f"{r['int8_bytes'] / 1024:.1f}",
             "yes" if r["ok"] else "NO"] for n, r in out.items()]
    print("\nDCASE 2024/2025 limits: 30 M MACs per second, 128 kB of parameters")
    print(common.table(["model", "M MACs / s", "parameters", "int8 kB (stored)", "within limits"], rows))
    return out


def speed(quick: bool, repeats: int, batch: int) -> dict[str, dict]:
    from asczoo.deploy.quantize import quantize_int8

    out = {}
    rows = []
    for name, keep in {**ENTRIES, BASELINE: []}.items():
        model = build(name, quick)
        g = torch.Generator().manual_seed(2)
        calibration = [torch.randn(8, *model.input_shape, generator=g) for _ in range(2)]
        q = quantize_int8(model, calibration, keep_float=keep).model
        clips = torch.randn(batch, *model.input_shape, generator=g)
        with torch.no_grad():
            labels = model(clips).argmax(1)
            agreement = float((q(clips).argmax(1) == labels).float().mean())

        def run(m, x):
            def step():
                with torch.no_grad():
                    m(x)
            return step

        one, many = clips[:1], clips
        t1 = common.interleave({"fp32": run(model, one), "int8": run(q, one)}, repeats=3 * repeats)
        tb = common.interleave({"fp32": run(model, many), "int8": run(q, many)}, repeats=repeats)
        out[name] = {"speedup_1": t1["fp32"].median / t1["int8"].median,
                     "speedup_b": tb["fp32"].median / tb["int8"].median, "agreement": agreement}
        rows.append([name, common.fmt_ms(t1["fp32"].median), common.fmt_ms(t1["int8"].median),
                     common.fmt_ratio(out[name]["speedup_1"]), common.fmt_ms(tb["fp32"].median),
                     common.fmt_ms(tb["int8"].median), common.fmt_ratio(out[name]["speedup_b"]),
                     f"{100 * agreement:.1f}%"])
    print(f"\nfp32 vs static int8 on the CPU ({torch.backends.quantized.engine} engine): 1 clip and batch {batch}; "
          "accuracy on a synthetic split labelled by the float model (fp32: 100 % by construction)")
    print(common.table(["model", "fp32 1 ms", "int8 1 ms", "speed-up 1", f"fp32 {batch} ms", f"int8 {batch} ms",
                        f"speed-up {batch}", "int8 accuracy"], rows))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, help="the large batch (default 64; 4 with --quick)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    batch = args.batch or (4 if args.quick else 64)
    repeats = 1 if args.quick else 5
    limits = counts(args.quick)
    timing = speed(args.quick, repeats, batch)
    plain, relation = limits["lc-resnet-narrow"], limits["lc-atresn-narrow"]
    print(common.result_line(
        batch=batch,
        plain_mmacs=plain["macs_per_s"] / 1e6, plain_params=plain["params"], plain_int8_kb=plain["int8_bytes"] / 1024,
        relation_mmacs=relation["macs_per_s"] / 1e6, relation_params=relation["params"],
        relation_int8_kb=relation["int8_bytes"] / 1024,
        plain_speedup_1=timing["lc-resnet-narrow"]["speedup_1"], plain_speedup_b=timing["lc-resnet-narrow"]["speedup_b"],
        relation_speedup_1=timing["lc-atresn-narrow"]["speedup_1"],
        relation_speedup_b=timing["lc-atresn-narrow"]["speedup_b"],
        resnet3d_speedup_1=timing[BASELINE]["speedup_1"], resnet3d_speedup_b=timing[BASELINE]["speedup_b"],
        plain_int8_accuracy=timing["lc-resnet-narrow"]["agreement"],
        relation_int8_accuracy=timing["lc-atresn-narrow"]["agreement"],
        resnet3d_int8_accuracy=timing[BASELINE]["agreement"]))
    return {"env": env, "limits": limits, "timing": timing}


if __name__ == "__main__":
    main()
