"""GPU training throughput measured through the engine's own epoch, eager and ``torch.compile``, and the
paper's stage 2 projected from it.

For ``resnet18-segments``, ``resnet18-3d`` and ``atresn-net-resnet18`` at the full DCASE input, at the
recipe's stage-2 batch (16) and at 64, eager and compiled: :func:`asczoo.engine.fit` trains two epochs
of synthetic clips held on the device (as ``data_on_device`` holds a real cache), with the stage-2
recipe's settings (SGD with momentum, the lr-swap augmentation, an evaluation and a checkpoint after
every epoch), bf16 autocast and channels-last weights (:func:`asczoo.engine.to_channels_last`, which
also handles the 5-D weights of conv3d models). The second epoch is the measurement: its training
time (the engine's ``seconds``, per-step costs included) and its evaluation-plus-checkpoint time,
each per clip. The projected stage-2 wall time is 100 epochs of 9,185 training clips and 4,185
evaluation clips (DCASE 2019 fold 1) at those per-clip times, for the recipe's batch of 16.

Every measurement starts from a fresh compile state (``torch._dynamo.reset()``): a graph compiled for
one model is never reused for the next. The FLOPs of one training step come from
``torch.utils.flop_counter`` (matmuls and convolutions, forward and backward), and the achieved FLOP/s
over the GPU's dense bf16 peak is the "share of peak".

Without a CUDA device it prints "not measured" and exits 0. ``--device cpu`` runs the same code on
tiny models and a few clips as a dry run of the code path (not a measurement; ``--quick --backend
eager`` is what the smoke test runs).

Run: ``python -m benchmarks.gpu [--quick]``; last line ``RESULT clips_per_s=... stage2_minutes=...``
(ATReSN-Net at batch 16, the faster of eager and compiled; ``not_measured`` without a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

import asczoo
from benchmarks import common

MODELS = ("resnet18-segments", "resnet18-3d", "atresn-net-resnet18")
BATCHES = (16, 64)
#: the recipe's stage-2 batch: the one the projection is made for
STAGE2_BATCH = 16
STAGE2_EPOCHS = 100
#: DCASE 2019 task 1a, fold 1
TRAIN_CLIPS, EVAL_CLIPS = 9185, 4185
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


class SyntheticClips(Dataset):
    """``count`` random clips (float16 values, as a float16 cache stores them) with labels."""

    def __init__(self, count: int, shape: tuple[int, ...], classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.features = torch.randn(count, *shape, generator=g).half().float()
        self.labels = torch.randint(0, classes, (count,), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[i], self.labels[i]


class EpochClock:
    """Callback: the time at the end of every epoch (after its evaluation and checkpoint)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch_end(self, **_):
        self.ends.append(time.perf_counter())


def measure(name: str, *, batch: int, compiled: bool | str, device: str, train_clips: int, eval_clips: int,
            overrides: dict | None = None) -> dict:
    """Two epochs of :func:`asczoo.engine.fit`; the second one's per-clip training and evaluation times."""
    from asczoo import engine

    torch._dynamo.reset()  # a fresh compile state: nothing compiled for an earlier model is reused
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides=overrides)
    shape, classes = model.input_shape, model.num_classes
    runtime = engine.Runtime(device=torch.device(device), precision="bf16", channels_last=True,
                             compile=compiled, data_on_device=True, progress=False)
    train = engine.Features(SyntheticClips(train_clips, shape, classes, 0), runtime=runtime, in_memory=True)
    evaluate = engine.Features(SyntheticClips(eval_clips, shape, classes, 1), runtime=runtime, in_memory=True)
    spec = engine.StageSpec(
        name="stage2", index=1, unit="clip", epochs=2, batch_size=batch,
        optimizer={"name": "sgd", "lr": 0.002, "momentum": 0.9, "weight_decay": 1e-4},
        schedule={"name": "constant"}, augment=[{"plugin": "lr-swap", "per": "batch"}], label_smoothing=0.0,
        drop_last=True, keep="last", eval_every=1, eval_at_start=False, eval_batch_size=batch, seed=0)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as directory:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        summary = engine.fit(model, spec, train=train, evaluate=evaluate, runtime=runtime, directory=Path(directory),
                             tensorboard=False, callbacks=[clock], log=lambda *_: None)
    first, second = summary["history"][0], summary["history"][1]
    trained = (train_clips // batch) * batch
    train_s = second["seconds"]
    eval_s = (clock.ends[1] - clock.ends[0]) - train_s  # evaluation, checkpoint and logging
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"clips_per_s": trained / train_s, "train_s_per_clip": train_s / trained,
            "eval_s_per_clip": max(eval_s, 0.0) / eval_clips, "first_epoch_s": first["seconds"], "peak": peak}


@contextlib.contextmanager
def compile_backend(backend: str):
    """``torch.compile`` with another backend while the engine compiles (``eager`` for a quick dry run
    of the code path: dynamo's tracing and guards without inductor's code generation)."""
    if backend == "inductor":
        yield
        return
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def stage2_minutes(r: dict) -> float:
    """Projected wall time of the paper's stage 2 at the measured per-clip times."""
    epoch = r["train_s_per_clip"] * TRAIN_CLIPS + r["eval_s_per_clip"] * EVAL_CLIPS
    return STAGE2_EPOCHS * epoch / 60


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cuda (default); cpu is a dry run of the code path on tiny models, not a measurement")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
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
    if dry:
        device_name, peak_flops = "cpu (dry run)", math.nan
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # as the engine sets it; the kNN and folds stay IEEE
        torch.backends.cudnn.allow_tf32 = True
        device_name = torch.cuda.get_device_name(0)
        peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else bf16_peak(device_name)
    # whole batches of training clips per epoch; evaluation over a quarter as many (at least one batch)
    steps = 2 if (args.quick or dry) else 20
    modes = (False,) if args.no_compile else (False, True)

    results, flops = {}, {}
    for name in MODELS:
        for batch in BATCHES:
            train_clips = batch * steps
            eval_clips = max(batch, train_clips // 4)
            for compiled in modes:
                try:
                    with compile_backend(args.backend):
                        r = measure(name, batch=batch, compiled=compiled, device=args.device,
                                    train_clips=train_clips, eval_clips=eval_clips, overrides=overrides)
                except Exception as exc:  # a compiler failure must not hide the eager figures
                    if not compiled:
                        raise
                    print(f"  {name} B={batch} compiled: failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
                    continue
                results[(name, batch, bool(compiled))] = r
                print(f"  {name} B={batch} {'compiled' if compiled else 'eager'}: {r['clips_per_s']:.0f} clips/s",
                      flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        model = asczoo.create_model(name, overrides=overrides).to(args.device)
        x = torch.randn(STAGE2_BATCH, *model.input_shape, device=args.device)
        flops[name] = step_flops(model.train(), x, torch.zeros(STAGE2_BATCH, dtype=torch.long, device=args.device))

    rows = []
    for (name, batch, compiled), r in results.items():
        per_clip = flops[name] / STAGE2_BATCH
        share = per_clip * r["clips_per_s"] / peak_flops if peak_flops == peak_flops else math.nan
        rows.append([name, batch, "compile" if compiled else "eager", f"{r['clips_per_s']:.0f}",
                     f"{1e3 * r['eval_s_per_clip']:.2f}", f"{r['first_epoch_s']:.1f}", f"{per_clip / 1e9:.1f}",
                     "-" if math.isnan(share) else f"{100 * share:.1f} %", common.fmt_mib(r["peak"]),
                     f"{stage2_minutes(r):.1f}"])
    print(f"\n{device_name}; bf16 autocast, channels-last; the engine's second epoch of {steps} steps (training, "
          f"then evaluation and checkpoint); bf16 peak {peak_flops / 1e12:.0f} TFLOP/s")
    print(common.table(["model", "batch", "mode", "train clips / s", "eval + ckpt ms / clip", "first epoch s",
                        "GFLOP / clip (fwd+bwd)", "share of bf16 peak", "peak MiB", "stage 2 min"], rows))
    flagship = [r for (n, b, _), r in results.items() if n == "atresn-net-resnet18" and b == STAGE2_BATCH]
    best = min(flagship, key=stage2_minutes)
    minutes = stage2_minutes(best)
    print(f"stage 2 ({STAGE2_EPOCHS} epochs x {TRAIN_CLIPS:,} training + {EVAL_CLIPS:,} evaluation clips, batch "
          f"{STAGE2_BATCH}) for atresn-net-resnet18: {minutes:.1f} min projected (target under {TARGET_MINUTES:g} min: "
          f"{'met' if minutes < TARGET_MINUTES else 'MISSED'}; from the engine's epoch: per-step costs, evaluation "
          "and checkpoints included, data held on the device)")
    print(common.result_line(clips_per_s=best["clips_per_s"], stage2_minutes=minutes,
                             device=device_name.replace(" ", "_")))
    return {"env": env, "measured": not dry, "clips_per_s": best["clips_per_s"], "stage2_minutes": minutes,
            "results": results}


if __name__ == "__main__":
    main()
