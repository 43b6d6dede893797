"""Steady-state bf16 training throughput on a GPU, eager and ``torch.compile``, and the paper's stage 2.

For ``resnet18-segments``, ``resnet18-3d`` and ``atresn-net-resnet18`` at the full DCASE input: batch
64 of synthetic clips already on the GPU (the loader is not measured), ``torch.autocast`` bf16,
channels-last weights, SGD with momentum (stage-2 settings), warm-up then timed steps between CUDA
synchronisations. Each model runs eagerly and compiled (``torch.compile``, default mode; compile time
is reported apart and excluded from the steady state). The FLOPs of one training step come from
``torch.utils.flop_counter`` (matmuls and convolutions, forward and backward); achieved FLOP/s over
the GPU's dense bf16 peak is the "share of peak". Stage 2 of the paper is 100 epochs of the 9,185
fold-1 training clips: its projected wall time is 918,500 clips at the best measured ATReSN-Net rate.

Without a CUDA device it prints "not measured" and exits 0. ``--device cpu`` runs the same code on
tiny models as a dry run of the code path (not a measurement).

Run: ``python -m benchmarks.gpu [--quick]``; last line ``RESULT clips_per_s=... stage2_minutes=...``
(ATReSN-Net, the faster of eager and compiled; ``not_measured`` without a GPU).
"""

from __future__ import annotations

import math
import time

import torch

import asczoo
from benchmarks import common

MODELS = ("resnet18-segments", "resnet18-3d", "atresn-net-resnet18")
STAGE2_CLIPS = 100 * 9185
TARGET_MINUTES = 15.0
#: dense bf16 tensor-core peak, TFLOP/s, by device name (vendor data sheets, no sparsity)
BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "RTX 4090": 165.0}


def bf16_peak(name: str) -> float:
    for key, value in sorted(BF16_PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if all(part in name for part in key.split()):
            return value * 1e12
    return math.nan


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward (flop counter; elementwise work and top-k are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(name: str, *, batch: int, compiled: bool, device: str, warmup: int, steps: int,
            overrides: dict | None = None) -> dict:
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides=overrides).to(device).to(memory_format=torch.channels_last)
    model.train()
    x = torch.randn(batch, *model.input_shape, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    flops = step_flops(model, x, y) if not compiled else math.nan
    run = torch.compile(model) if compiled else model
    optimiser = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-4)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(run(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    start = time.perf_counter()
    step()  # compiles when compiled
    common._sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = common.time_one(step, repeats=steps, warmup=0, device=device)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"clips_per_s": batch / t.median, "step_s": t.median, "first_step_s": first, "flops": flops,
            "peak": peak}


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cuda (default); cpu is a dry run of the code path on tiny models, not a measurement")
    p.add_argument("--batch", type=int, default=None, help="batch (default 64; 4 for the cpu dry run)")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the built-in table")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("GPU benchmark: not measured (no CUDA device on this machine)")
        print(common.result_line(clips_per_s="not_measured", stage2_minutes="not_measured"))
        return {"env": env, "measured": False}

    dry = args.device == "cpu"
    overrides = None
    if dry:
        from asczoo.testing import tiny_overrides

        overrides = tiny_overrides()
    batch = args.batch or (4 if dry else 64)
    warmup, steps = (1, 2) if (args.quick or dry) else (10, 30)
    if dry:
        device_name, peak_flops = "cpu (dry run)", math.nan
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        device_name = torch.cuda.get_device_name(0)
        peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else bf16_peak(device_name)

    results = {}
    for name in MODELS:
        for compiled in ((False,) if args.no_compile else (False, True)):
            try:
                r = measure(name, batch=batch, compiled=compiled, device=args.device, warmup=warmup, steps=steps,
                            overrides=overrides)
            except Exception as exc:  # a compiler failure must not hide the eager figures
                if not compiled:
                    raise
                print(f"  {name} compiled: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
                continue
            results[(name, compiled)] = r
            print(f"  {name} {'compiled' if compiled else 'eager'}: {r['clips_per_s']:.0f} clips/s", flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()

    rows = []
    for (name, compiled), r in results.items():
        flops = results[(name, False)]["flops"]  # the same model, so the same FLOPs
        share = flops / r["step_s"] / peak_flops if peak_flops == peak_flops else math.nan
        rows.append([name, "compile" if compiled else "eager", f"{r['clips_per_s']:.0f}", common.fmt_ms(r["step_s"]),
                     f"{r['first_step_s']:.1f}", f"{flops / batch / 1e9:.1f}",
                     "-" if math.isnan(share) else f"{100 * share:.1f} %", common.fmt_mib(r["peak"]),
                     f"{STAGE2_CLIPS / r['clips_per_s'] / 60:.1f}"])
    print(f"\n{device_name}; batch {batch}, bf16 autocast, channels-last; median of {steps} steps after {warmup} "
          f"warm-up steps; bf16 peak {peak_flops / 1e12:.0f} TFLOP/s")
    print(common.table(["model", "mode", "clips / s", "step ms", "first step s", "GFLOP / clip (fwd+bwd)",
                        "share of bf16 peak", "peak MiB", "stage 2 min"], rows))
    best = max((r for (n, _), r in results.items() if n == "atresn-net-resnet18"), key=lambda r: r["clips_per_s"])
    minutes = STAGE2_CLIPS / best["clips_per_s"] / 60
    print(f"stage 2 (100 epochs x 9,185 clips) for atresn-net-resnet18: {minutes:.1f} min projected "
          f"(target under {TARGET_MINUTES:g} min: {'met' if minutes < TARGET_MINUTES else 'MISSED'}; excludes data "
          "loading, evaluation and checkpoints)")
    print(common.result_line(clips_per_s=best["clips_per_s"], stage2_minutes=minutes,
                             device=device_name.replace(" ", "_")))
    return {"env": env, "measured": not dry, "clips_per_s": best["clips_per_s"], "stage2_minutes": minutes}


if __name__ == "__main__":
    main()
