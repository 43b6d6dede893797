"""Clips per second of asczoo's ``dcase-logmel`` frontend against the authors' librosa pipeline.

The authors' pipeline (``sequence_generation.py`` in zlw9161/ATReSN-Net), rebuilt: the clip as read
by ``soundfile`` (float64), the difference channel ``L - R``, then for each of the three channels
``librosa.feature.melspectrogram`` (n_fft 2048, hop 1024, 128 HTK mel bands, no area normalisation,
0 to 24 kHz, centred frames; ``pad_mode="reflect"``, the librosa default of the authors' era and
asczoo's), the 8 segments of 80 frames, ``log(x + 1e-8)``. A second librosa column is the same
computation tuned (float32 input, the mel filter bank built once): the fairest librosa can do in one
process. asczoo's frontend runs per clip (``frontend(waveform, 48000)``, what ``asczoo extract``
calls) and on batches of 8 clips (``frontend.batch``). The pipelines are timed interleaved (each
repeat runs every pipeline over all clips in turn, each run after a short untimed pause so that one
pipeline's spinning worker threads do not slow the next; see :func:`per_clip_seconds`). Everything
is single-process on 10 s, 48 kHz stereo clips held in memory (file reading is the same
``soundfile`` call for both and is reported on its own). The outputs are compared before timing.

Also: the end-to-end throughput of ``asczoo extract`` with its default workers on a synthetic
dataset written by ``asczoo synth`` (reading, checks, features, shards, statistics).

Run: ``python -m benchmarks.frontend [--quick]`` (``--quick``: 2 clips, 20 for extract); last line
``RESULT speedup=... extract_clips_per_s=...`` (``speedup``: asczoo per clip against the authors'
pipeline).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import asczoo
from benchmarks import common

SR, SECONDS, N_FFT, HOP, MELS, SEGMENTS, FRAMES = 48000, 10, 2048, 1024, 128, 8, 80


def make_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` stereo clips ``(samples, 2)`` float64 (as ``soundfile.read`` returns them): noise and tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR * SECONDS) / SR
    clips = []
    for _ in range(count):
        tone = np.sin(2 * np.pi * rng.uniform(100, 8000) * t)
        left = 0.05 * rng.standard_normal(t.size) + 0.2 * tone
        right = 0.05 * rng.standard_normal(t.size) + 0.1 * tone
        clips.append(np.stack([left, right], axis=1))
    return clips


def authors_pipeline(s: np.ndarray) -> np.ndarray:
    """One clip ``(samples, 2)`` -> ``(N, 3, 128, 80)`` the authors' way (librosa per channel)."""
    import librosa

    s = np.concatenate([s, (s[:, 0] - s[:, 1])[:, None]], axis=-1)
    out = np.zeros((SEGMENTS, 3, MELS, FRAMES), np.float32)
    for channel in range(3):
        mel = librosa.feature.melspectrogram(y=s[:, channel], sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=MELS,
                                             fmin=0.0, fmax=SR / 2, htk=True, norm=None, pad_mode="reflect")
        hop = (mel.shape[1] - FRAMES) // (SEGMENTS - 1)
        for seg in range(SEGMENTS):
            out[seg, channel] = mel[:, seg * hop: seg * hop + FRAMES]
    return np.log(out + 1e-8)


class TunedLibrosa:
    """The same features with librosa at its best in one process: float32, filter bank built once."""

    def __init__(self) -> None:
        import librosa

        self.librosa = librosa
        self.basis = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=MELS, fmin=0.0, fmax=SR / 2, htk=True,
                                         norm=None).astype(np.float32)

    def __call__(self, s: np.ndarray) -> np.ndarray:
        x = s.T.astype(np.float32)
        three = np.stack([x[0], x[1], x[0] - x[1]])
        spec = self.librosa.stft(three, n_fft=N_FFT, hop_length=HOP, pad_mode="reflect")
        mel = np.log(self.basis @ (spec.real ** 2 + spec.imag ** 2) + 1e-8)  # (3, 128, T)
        hop = (mel.shape[-1] - FRAMES) // (SEGMENTS - 1)
        return np.stack([mel[:, :, s * hop: s * hop + FRAMES] for s in range(SEGMENTS)])


#: untimed pause before each timed run, seconds: see :func:`per_clip_seconds`
SETTLE_SECONDS = 0.3


def per_clip_seconds(pipelines: dict, repeats: int, settle: float = SETTLE_SECONDS) -> dict[str, common.Timing]:
    """Seconds per clip of each ``name: (fn, clips)``, interleaved: each repeat runs every pipeline
    over all of its clips in turn (after one untimed warm-up run of each).

    Each timed run starts after an untimed pause of ``settle`` seconds. The pipelines share one
    process, and numpy's OpenBLAS worker threads (librosa's matrix products) keep spinning for about
    0.1 s after their last call; without the pause, whichever multi-threaded pipeline runs next finds
    the second core taken (measured: asczoo's first clip after librosa took up to 100 ms instead of
    7 ms, and its 16 clips 10 ms each instead of 4).
    """
    def over(fn, clips):
        def run():
            for c in clips:
                fn(c)
        return run

    runs = {name: over(fn, clips) for name, (fn, clips) in pipelines.items()}
    for run in runs.values():
        run()
    timings = {name: common.Timing() for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            time.sleep(settle)
            start = time.perf_counter()
            run()
            timings[name].samples.append(time.perf_counter() - start)
    return {name: common.Timing([s / len(pipelines[name][1]) for s in t.samples]) for name, t in timings.items()}


def extract_throughput(clips: int, threads: int) -> tuple[float, float | None]:
    """``asczoo synth`` then ``asczoo extract`` (default workers); (clips/s of extract, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cli = [sys.executable, "-W", "ignore", "-m", "asczoo"]
        subprocess.run([*cli, "synth", str(root), "--clips", str(clips), "--no-progress"], check=True,
                       capture_output=True, env=env)
        start = time.perf_counter()
        done = subprocess.run([*cli, "extract", str(root), "--dataset", "dcase2019-task1a", "--no-progress",
                               "--cache", str(Path(tmp) / "cache")], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(f"asczoo extract failed: {done.stderr.strip().splitlines()[-1:]}")
            return float("nan"), None
        return clips / seconds, seconds


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--clips", type=int, help="clips per timing repeat (default 16; 2 with --quick)")
    p.add_argument("--extract-clips", type=int, help="clips for the asczoo extract run (default 60; 20 with --quick)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    count = args.clips or (2 if args.quick else 16)
    repeats = 2 if args.quick else 5
    clips = make_clips(count)
    tensors = [torch.from_numpy(c.T.astype(np.float32)) for c in clips]
    fe = asczoo.create_frontend("dcase-logmel")
    tuned = TunedLibrosa()

    ours, theirs, best = fe(tensors[0], SR).numpy(), authors_pipeline(clips[0]), tuned(clips[0])
    print(f"output {ours.shape}; max |asczoo - authors| = {np.abs(ours - theirs).max():.2e}, "
          f"max |tuned librosa - authors| = {np.abs(best - theirs).max():.2e} (log domain)")

    with tempfile.TemporaryDirectory() as tmp:  # reading cost, for scale (the same for both pipelines)
        import soundfile

        path = Path(tmp) / "clip.wav"
        soundfile.write(path, clips[0], SR, subtype="PCM_16")
        t_read = common.time_one(lambda: soundfile.read(path), repeats=5).median

    size = min(8, len(tensors))
    batches = [torch.stack(tensors[i:i + size]) for i in range(0, len(tensors) - size + 1, size)]
    times = per_clip_seconds({
        "authors' pipeline (librosa, float64)": (authors_pipeline, clips),
        "librosa tuned (float32, basis once)": (tuned, clips),
        "asczoo, one clip per call": (lambda c: fe(c, SR), tensors),
        f"asczoo, batches of {size}": (lambda b: fe.batch(b, SR), batches),
    }, repeats)
    per_batch = times[f"asczoo, batches of {size}"]
    times[f"asczoo, batches of {size}"] = common.Timing([s / size for s in per_batch.samples])

    reference = times["authors' pipeline (librosa, float64)"].median
    rows = [[name, common.fmt_ms(t.median), f"{1 / t.median:.1f}", common.fmt_ratio(reference / t.median)]
            for name, t in times.items()]
    rows.append(["(reading a 10 s 16-bit stereo WAV, soundfile)", common.fmt_ms(t_read), f"{1 / t_read:.1f}", "-"])
    print(f"\n10 s 48 kHz stereo clips -> (8, 3, 128, 80); {count} clips per repeat, median of {repeats}; "
          f"one process, torch threads {torch.get_num_threads()}")
    print(common.table(["pipeline", "ms / clip", "clips / s", "vs authors"], rows))
    speedup = reference / times["asczoo, one clip per call"].median
    vs_tuned = times["librosa tuned (float32, basis once)"].median / times["asczoo, one clip per call"].median
    print(f"target: asczoo >= 5x the authors' pipeline: {speedup:.1f}x ({'met' if speedup >= 5 else 'MISSED'}); "
          f"against tuned librosa {vs_tuned:.1f}x")

    n_extract = args.extract_clips or (20 if args.quick else 60)
    rate, seconds = extract_throughput(n_extract, args.threads)
    if seconds is not None:
        print(f"\nasczoo extract (default workers = 0, this process), {n_extract} synthetic 10 s clips: "
              f"{seconds:.1f} s, {rate:.1f} clips/s (start-up, reading, checks, features, shards, statistics)")
    print(common.result_line(speedup=speedup, speedup_vs_tuned_librosa=vs_tuned,
                             clips_per_s=1 / times["asczoo, one clip per call"].median, extract_clips_per_s=rate))
    return {"env": env, "speedup": speedup}


if __name__ == "__main__":
    main()
