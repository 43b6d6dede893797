"""Clips per second of ``asczoo predict`` on a folder, against the model's bare batched forward (issue 23).

Writes ``--clips`` synthetic 10-second 48 kHz stereo 16-bit WAVs (the DCASE clip) into a temporary
folder and times, round-robin in one process, (a) :func:`asczoo.inference.predict_files` on the folder
(what ``asczoo predict MODEL FOLDER`` runs: reading and resampling on a background thread, the
frontend and the model on the main one, batches of ``--batch`` windows) and (b) the model alone on the
same number of clips, as ready-made features in batches of ``--batch``. Their ratio says how much of
the model's own speed a user gets from the command: 1.0 would mean that reading the files and the
frontend cost nothing beside the model. Random weights: the time does not depend on them.

Run: ``python -m benchmarks.predict_throughput [--quick] [--model NAME] [--clips 200] [--batch 16]``
(``--quick``: 24 clips, one repeat); last line ``RESULT predict_ratio=... predict_clips_per_s=...
forward_clips_per_s=...``. Nothing else heavy should run at the same time.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

import asczoo
from benchmarks import common

RATE, SECONDS = 48000, 10.0


def write_clips(folder: Path, clips: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(RATE * SECONDS)
    t = np.arange(n) / RATE
    for i in range(clips):
        tone = 0.2 * np.sin(2 * np.pi * (200 + 37 * i) * t)
        data = np.stack([tone + 0.05 * rng.standard_normal(n), tone + 0.05 * rng.standard_normal(n)], axis=1)
        sf.write(str(folder / f"clip{i:04d}.wav"), data.astype(np.float32), RATE, subtype="PCM_16")


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--model", default="atresn-net-resnet18", help="registry model (default %(default)s)")
    p.add_argument("--clips", type=int, help="clips in the folder (default 200; 24 with --quick)")
    p.add_argument("--batch", type=int, default=16, help="windows per forward pass (default %(default)s)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    clips = args.clips or (24 if args.quick else 200)
    repeats = 1 if args.quick else 2
    from asczoo.inference import collect_audio_files, predict_files

    model = asczoo.create_model(args.model).eval()
    with tempfile.TemporaryDirectory(prefix="asczoo-throughput-") as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        write_clips(folder, clips)
        files = collect_audio_files([folder])
        assert len(files) == clips
        x = torch.randn(args.batch, *model.input_shape)
        batches = math.ceil(clips / args.batch)
        last = clips - (batches - 1) * args.batch

        def forward() -> None:
            with torch.no_grad():
                for b in range(batches):
                    model(x if b < batches - 1 else x[:last])

        def predict() -> None:
            results = predict_files(model, files, batch_size=args.batch, progress=False)
            assert all(r.error is None for r in results), [r.error for r in results if r.error]

        timing = common.interleave({"asczoo predict (folder)": predict, "bare forward (features)": forward},
                                   repeats=repeats, warmup=0 if args.quick else 1)
    rate = {name: clips / t.median for name, t in timing.items()}
    ratio = rate["asczoo predict (folder)"] / rate["bare forward (features)"]
    print(f"\n{args.model}, {clips} clips of {SECONDS:g} s at {RATE} Hz stereo, batch {args.batch}; median of "
          f"{repeats} interleaved runs")
    print(common.table(["what", "seconds", "clips / s"],
                       [[name, f"{t.median:.2f}", f"{rate[name]:.2f}"] for name, t in timing.items()]))
    print(f"target: predict >= 0.8 of the bare forward pass: {ratio:.2f} ({'met' if ratio >= 0.8 else 'MISSED'})")
    print(common.result_line(predict_ratio=ratio, predict_clips_per_s=rate["asczoo predict (folder)"],
                             forward_clips_per_s=rate["bare forward (features)"], clips=clips, batch=args.batch))
    return {"env": env, "predict_ratio": ratio}


if __name__ == "__main__":
    main()
