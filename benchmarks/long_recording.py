"""Peak memory of ``asczoo predict`` on long recordings: flat in the recording's length (issue 23).

Writes synthetic 48 kHz stereo 16-bit WAVs of several lengths (in blocks, with ``soundfile``; 3 h is
2.07 GB on disk: the free space of ``--dir`` is checked first), saves the default model
(``atresn-net-resnet18`` at full size, random weights: memory and time do not depend on the weights)
and classifies each file with ``asczoo predict MODEL FILE --batch-size 16 --device cpu
--timeline OUT.csv`` in a fresh Python process. That process reports its resident-set high-water mark
(``VmHWM``, the peak a user sees, allocator caching included) and what was resident once torch was
imported and the model loaded, before the file was opened. Before issue 23 a file was read and
resampled whole (a 3 h 48 kHz stereo file is 4.1 GB as float32, and files over 2**29 samples, about
93 min, were refused).

Run: ``python -m benchmarks.long_recording [--quick] [--minutes 30 180] [--dir /tmp]``
(``--quick``: 2 and 6 minutes); last line ``RESULT peak_mib_short=... peak_mib_long=... ...``.
Nothing else heavy should run at the same time (the timings, not the memory, depend on it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

RATE, CHANNELS = 48000, 2
#: the child: load the model (what is resident then is the baseline), classify, report VmHWM
CHILD = """
import json, sys, time
import torch
from asczoo.cli import main
from asczoo.models.factory import load_model
torch.set_num_threads(int(sys.argv[1]))
load_model(sys.argv[2], device="cpu")
status = lambda: {k: int(v.split()[0]) * 1024 for k, v in
                  (line.split(":", 1) for line in open("/proc/self/status")) if k in ("VmRSS", "VmHWM")}
before = status()
start = time.perf_counter()
code = main(["predict", *sys.argv[2:]])
print("MEMORY " + json.dumps({"code": code, "seconds": time.perf_counter() - start,
                              "baseline": before["VmRSS"], **status()}))
"""


def write_long_wav(path: Path, minutes: float, *, block_seconds: int = 60, seed: int = 0) -> int:
    """A ``minutes`` long 48 kHz stereo PCM_16 WAV of noise whose level changes every block, written a
    block at a time (memory independent of the length); returns its size in bytes."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    base = (0.1 * rng.standard_normal((block_seconds * RATE, CHANNELS))).astype(np.float32)
    frames = int(round(minutes * 60 * RATE))
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=CHANNELS, subtype="PCM_16", format="WAV") as f:
        written = 0
        while written < frames:
            n = min(len(base), frames - written)
            f.write(base[:n] * float(rng.uniform(0.2, 1.5)))
            written += n
    return path.stat().st_size


def run(model_dir: Path, wav: Path, out: Path, threads: int, batch_size: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(threads), str(model_dir), str(wav), "--batch-size", str(batch_size),
           "--device", "cpu", "-q", "--output", str(out / "submission.tsv"), "--timeline", str(out / "timeline.csv")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMORY "):
            result = json.loads(line[len("MEMORY "):])
            result["windows"] = sum(1 for _ in open(out / "timeline.csv")) - 1
            return result
    raise RuntimeError(f"asczoo predict failed on {wav}: {(proc.stderr or proc.stdout).strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--minutes", type=float, nargs="+", default=None, help="recording lengths (default 30 180)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the WAVs are written (default: temp dir)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    minutes = args.minutes or ([2.0, 6.0] if args.quick else [30.0, 180.0])
    common.setup(args.threads)
    import asczoo

    need = int(max(minutes) * 60 * RATE * CHANNELS * 2 * 1.05) + 2**28
    free = shutil.disk_usage(args.dir).free
    if free < need:
        raise SystemExit(f"{args.dir}: {free / 2**30:.1f} GiB free; the {max(minutes):g} min WAV needs "
                         f"{need / 2**30:.1f} GiB: pass shorter --minutes or another --dir")
    work = Path(tempfile.mkdtemp(prefix="asczoo-long-", dir=args.dir))
    rows, results = [], []
    try:
        model_dir = work / "model"
        asczoo.create_model("atresn-net-resnet18").save_pretrained(model_dir)
        for length in minutes:
            wav = work / f"long_{length:g}min.wav"
            t0 = time.perf_counter()
            size = write_long_wav(wav, length)
            written = time.perf_counter() - t0
            result = run(model_dir, wav, work, args.threads, args.batch_size)
            results.append(result)
            wav.unlink()  # before the next, longer one: at most one on disk
            rows.append([f"{length:g} min", f"{size / 2**30:.2f} GiB", f"{written:.0f} s", result["windows"],
                         f"{result['baseline'] / common.MiB:.0f}", f"{result['VmHWM'] / common.MiB:.0f}",
                         f"{(result['VmHWM'] - result['baseline']) / common.MiB:.0f}",
                         f"{result['seconds']:.0f} s", f"{length * 60 / result['seconds']:.1f}x"])
            if result["code"] != 0:
                raise RuntimeError(f"asczoo predict exited with {result['code']} on {wav}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(common.table(["recording", "WAV", "written in", "windows", "RSS after model load (MiB)",
                        "peak RSS (MiB)", "peak - load (MiB)", "predict time", "real time"], rows))
    short, long = results[0], results[-1]
    print(common.result_line(peak_mib_short=round(short["VmHWM"] / common.MiB), peak_mib_long=round(long["VmHWM"] / common.MiB),
                             minutes_short=minutes[0], minutes_long=minutes[-1], batch=args.batch_size,
                             threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
