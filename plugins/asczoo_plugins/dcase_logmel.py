"""The ``dcase-logmel`` frontend: the paper's three-channel log-mel segments (docs/method.md section 2).

Per clip: left, right and left-minus-right waveforms; for each a centred power STFT (Hann window of
``n_fft``, hop ``hop_length``), 128 HTK mel bands without area normalisation from ``f_min`` to
``f_max`` (default: Nyquist), then ``log(x + log_offset)``; the spectrogram is cut into ``segments``
windows of ``segment_frames`` frames by the paper's hop rule (:func:`asczoo.data.segment_starts`).
At the defaults a 10 s, 48 kHz clip has 469 frames and becomes ``(8, 3, 128, 80)``.

Input choices, all deliberate:

* mono input is duplicated to both sides (the difference channel is then zero); more than two channels
  is an error, since it is not clear which pair is the binaural one; ``channels=1`` declares a model
  made for mono recordings (the ``folder`` dataset sets it from the data): stereo input is then mixed
  to mono first, as its training clips were;
* other sample rates are resampled to ``sample_rate`` (``asczoo.dsp.resample``, torchaudio's, sinc
  interpolation) before anything else;
* clips shorter than ``clip_seconds`` are zero-padded at the end, so every segment exists and the hop
  rule sees the nominal frame count;
* longer clips: ``long_clips="segment"`` (default) spreads the N segments over the whole clip with the
  same hop rule, ``"crop"`` keeps the first ``clip_seconds``. For several predictions over a long
  recording use :meth:`DcaseLogMel.windows` instead.

The left-minus-right channel is taken on the waveform, not on the spectrograms, so its power is the
same when left and right are swapped (the ``lr-swap`` augmentation relies on this).
``pad_mode`` is the padding of centred frames: ``"reflect"`` was librosa's default until 0.10 (the
authors' era) and is torchaudio's; ``"constant"`` (zeros) is librosa's default since 0.10. Only the
first and last frame depend on it.

How it is computed. On the CPU (the feature-extraction case, one clip at a time) the memory traffic of
whole-clip intermediates, not arithmetic, dominates, so each clip goes its own way
(:meth:`DcaseLogMel._logmel_cpu`):

* only the frames some segment uses are computed (465 of 469 at the defaults; far fewer for long
  clips under ``long_clips="segment"``), each once although segments overlap;
* centred frames are windowed straight out of the clip through a strided view; only the few edge
  frames read a small padded copy of the clip's ends, so the clip itself is never padded or copied;
* the third channel is the FFT of the windowed waveform difference ``L - R``, not the difference of
  the L and R spectra: that would be one FFT fewer, but when the channels are close (a quiet
  difference next to loud sides) its rounding error is relative to the sides and reaches 1e-2 in the
  log domain;
* the power spectrum meets the mel filter bank group by group: a triangular filter covers few FFT
  bins (2,019 of the 131,200 weights are non-zero at the defaults), so contiguous groups of bands are
  multiplied only with the bins they cover (:func:`mel_bands`; 17x fewer multiply-adds than dense);
* intermediates live in per-thread workspace buffers that are reused from call to call (fresh large
  tensors cost a page fault per 4 KiB page on first touch); what is returned is always a new tensor.

On other devices the batch is processed at once with ``torch.stft`` and the dense filter bank.
Both paths agree to about 1e-6 in the log domain. Nothing here tracks gradients.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import torch
from asczoo import dsp

from asczoo import hookimpl
from asczoo.data import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, segment_starts
from asczoo.interfaces import Frontend

PLUGIN = "dcase-logmel"
#: upper bounds of the settings that size buffers (a window of n_fft, n_mels x n_fft filters, a clip)
MAX_N_FFT, MAX_MELS, MAX_SEGMENTS, MAX_CLIP_SECONDS = 2**16, 1024, 1024, 600.0


class DcaseLogMel(Frontend):
    """Three-channel (L, R, L-R) log-mel segments; see the module docstring for every choice."""

    #: at most this many bytes of windowed frames (three channels, float32) are processed at once on
    #: the CPU, in even chunks; it bounds the per-thread workspace (about 1.6 times this in all) and
    #: the one large fresh tensor per chunk (the FFT's output, as large). A 10 s clip at the defaults
    #: (465 frames used, 11.4 MB) is two chunks. Interleaved with other work (the benchmark), 8 MiB
    #: chunks were a little faster than one 12 MiB chunk (whose fresh FFT output page-faulted) and
    #: than 4 MiB ones (each FFT call has a fixed cost of about 25 us).
    chunk_bytes = 8 * 2**20

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float | None,
        segments: int,
        segment_frames: int,
        clip_seconds: float,
        log_offset: float,
        long_clips: str,
        pad_mode: str,
        channels: int = 2,
    ) -> None:
        # Bounds first: a config.json from anywhere builds a frontend, and window, filter bank and clip
        # buffers are allocated from these numbers (n_fft 2**31 is an 8 GB window).
        _require(MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE, "sample_rate", sample_rate,
                 f"an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} (Hz)")
        _require(2 <= n_fft <= MAX_N_FFT, "n_fft", n_fft, f"an integer from 2 to {MAX_N_FFT}")
        _require(0 < hop_length <= MAX_N_FFT, "hop_length", hop_length, f"an integer from 1 to {MAX_N_FFT}")
        _require(0 < n_mels <= MAX_MELS, "n_mels", n_mels, f"an integer from 1 to {MAX_MELS}")
        _require(0 < segments <= MAX_SEGMENTS, "segments", segments, f"an integer from 1 to {MAX_SEGMENTS}")
        _require(segment_frames > 0, "segment_frames", segment_frames, "a positive integer")
        _require(math.isfinite(clip_seconds) and 0 < clip_seconds <= MAX_CLIP_SECONDS, "clip_seconds", clip_seconds,
                 f"a positive number of seconds, at most {MAX_CLIP_SECONDS}")
        _require(log_offset > 0, "log_offset", log_offset, "a positive number")
        nyquist = sample_rate / 2
        top = nyquist if f_max is None else float(f_max)
        _require(0 <= f_min < top <= nyquist, "f_min/f_max", (f_min, f_max),
                 f"0 <= f_min < f_max <= sample_rate / 2 = {nyquist}")
        _require(long_clips in ("segment", "crop"), "long_clips", long_clips, "'segment' or 'crop'")
        _require(pad_mode in ("reflect", "constant"), "pad_mode", pad_mode, "'reflect' or 'constant'")
        _require(channels in (1, 2), "channels", channels, "1 (mono recordings) or 2 (stereo)")
        #: the recordings' channel count the model was made for: with 1, stereo input is mixed to mono
        #: first, so a model trained on mono clips never sees a left-right difference it did not learn
        self.channels = int(channels)
        self.sample_rate = int(sample_rate)
        self.n_fft, self.hop_length, self.n_mels = int(n_fft), int(hop_length), int(n_mels)
        self.segments, self.segment_frames = int(segments), int(segment_frames)
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.clip_frames = 1 + self.clip_samples // self.hop_length
        _require(self.segment_frames <= self.clip_frames, "segment_frames", segment_frames,
                 f"at most the {self.clip_frames} frames of a {clip_seconds} s clip")
        self.log_offset = float(log_offset)
        self.long_clips, self.pad_mode = long_clips, pad_mode
        self.config = {
            "plugin": PLUGIN, "sample_rate": self.sample_rate, "n_fft": self.n_fft,
            "hop_length": self.hop_length, "n_mels": self.n_mels, "f_min": float(f_min),
            "f_max": None if f_max is None else float(f_max), "segments": self.segments,
            "segment_frames": self.segment_frames, "clip_seconds": float(clip_seconds),
            "log_offset": self.log_offset, "long_clips": long_clips, "pad_mode": pad_mode,
        }
        if self.channels != 2:  # stored only when set, so the configs (and caches) of stereo models stay as they were
            self.config["channels"] = self.channels
        self.output_shape = (self.segments, 3, self.n_mels, self.segment_frames)
        # (n_freqs, n_mels), HTK scale, no area normalisation: librosa's htk=True, norm=None
        self._fbank = dsp.melscale_fbanks(
            self.n_fft // 2 + 1, float(f_min), top, self.n_mels, self.sample_rate, norm=None, mel_scale="htk"
        ).T.contiguous()
        self._window = torch.hann_window(self.n_fft, periodic=True)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._bands: list[tuple[int, int, int, int, torch.Tensor]] | None = None  # mel_bands, made on first use
        self._local = threading.local()  # per-thread workspace buffers of the CPU path

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "plugin")
        return f"DcaseLogMel({options})"

    # -- the interface ---------------------------------------------------------------------------

    def __call__(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(channels, samples)`` or ``(samples,)`` -> ``(N, 3, n_mels, segment_frames)``."""
        x = torch.as_tensor(waveform)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2:
            raise ValueError(f"expected a waveform (channels, samples), got shape {tuple(x.shape)}")
        return self.batch(x.unsqueeze(0), sample_rate)[0]

    @torch.no_grad()
    def batch(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(B, channels, samples)`` on any device -> ``(B, N, 3, n_mels, segment_frames)`` there."""
        x = self._prepare(waveforms, sample_rate)
        if x.shape[-1] > self.clip_samples and self.long_clips == "crop":
            x = x[..., : self.clip_samples]
        if x.device.type != "cpu":
            return self._batch_stft(x)
        x = self._pad(x)
        starts = segment_starts(self._num_frames(x.shape[-1]), self.segments, self.segment_frames).tolist()
        ranges, columns = _used_frames(starts, self.segment_frames)
        width = sum(b - a for a, b in ranges)
        work = self._buffer("logmel", 3 * self.n_mels * width).view(3, self.n_mels, width)
        out = torch.empty((x.shape[0], *self.output_shape))
        for b in range(x.shape[0]):
            self._logmel_cpu(x[b], ranges, work)
            for n, column in enumerate(columns):
                out[b, n].copy_(work[:, :, column : column + self.segment_frames])
        return out

    # -- extras ----------------------------------------------------------------------------------

    @torch.no_grad()
    def logmel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Stereo ``(B, 2, samples)`` at ``sample_rate`` -> full log-mel ``(B, 3, n_mels, frames)``.

        Clips shorter than ``clip_seconds`` are zero-padded at the end first.
        """
        x = torch.as_tensor(waveforms)
        if x.dim() != 3 or x.shape[1] != 2:
            raise ValueError(f"expected stereo waveforms (batch, 2, samples), got shape {tuple(x.shape)}")
        x = self._pad(x.to(torch.float32))
        if x.device.type != "cpu":
            return self._logmel_stft(x)
        frames = self._num_frames(x.shape[-1])
        out = torch.empty(x.shape[0], 3, self.n_mels, frames)
        for b in range(x.shape[0]):
            self._logmel_cpu(x[b], [(0, frames)], out[b])
        return out

    @torch.no_grad()
    def windows(self, waveform: torch.Tensor, sample_rate: int, hop_seconds: float | None = None) -> torch.Tensor:
        """A long recording ``(channels, samples)`` -> windows of the nominal clip ``(W, N, 3, F, T)``.

        Windows are ``clip_seconds`` long and start every ``hop_seconds`` (default: ``clip_seconds``,
        no overlap); if the last window would stop before the end, one more window ending exactly at the
        end is added, so no audio is left out. A recording shorter than one clip gives one padded
        window. Each window is then processed like a clip (:meth:`batch`).
        """
        x = torch.as_tensor(waveform)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        x = self._prepare(x.unsqueeze(0), sample_rate)[0]  # (2, S) at self.sample_rate
        total, length = x.shape[-1], self.clip_samples
        starts = self._window_starts(total, hop_seconds)
        chunks = torch.stack([x[:, s : s + length] for s in starts]) if total >= length else x.unsqueeze(0)
        return self.batch(chunks, self.sample_rate)

    def window_starts(self, num_samples: int, sample_rate: int, hop_seconds: float | None = None) -> list[float]:
        """Start times in seconds of the windows :meth:`windows` cuts from ``num_samples`` input samples."""
        total = num_samples if sample_rate == self.sample_rate else math.ceil(num_samples * self.sample_rate / sample_rate)
        return [s / self.sample_rate for s in self._window_starts(total, hop_seconds)]

    def _window_starts(self, total: int, hop_seconds: float | None) -> list[int]:
        hop = self.clip_samples if hop_seconds is None else int(round(hop_seconds * self.sample_rate))
        if hop <= 0:
            raise ValueError(f"hop_seconds must be positive, got {hop_seconds!r}")
        length = self.clip_samples
        starts = list(range(0, max(total - length, 0) + 1, hop))
        if total > length and starts[-1] + length < total:
            starts.append(total - length)
        return starts

    # -- the CPU path ----------------------------------------------------------------------------

    def _logmel_cpu(self, x: torch.Tensor, ranges: list[tuple[int, int]], out: torch.Tensor) -> None:
        """Log-mel of the frames in ``ranges`` of one stereo clip ``x`` ``(2, samples)`` into ``out``
        ``(3, n_mels, frames in ranges)``, ranges side by side.

        Per chunk of at most :attr:`chunk_bytes` of frames: window L, R and L - R into the workspace,
        one batched real FFT, power, the banded mel product (:func:`mel_bands`); then the log in place.
        Workspace buffers are per thread and never returned, so threads do not share them.
        """
        n_fft, hop, mels = self.n_fft, self.hop_length, self.n_mels
        n_freqs = n_fft // 2 + 1
        sources = self._frame_sources(x)  # any strides: (samples, channels) audio transposed is read in place
        window, bands = self._window, self._mel_bands()
        cap = max(1, self.chunk_bytes // (3 * 4 * n_fft))
        column = 0
        with torch.autocast(device_type="cpu", enabled=False):
            for chunk in _chunks(ranges, cap):
                n = sum(b - a for a, b in chunk)
                frames = self._buffer("frames", 3 * n * n_fft).view(3, n, n_fft)
                k = 0  # first row of frames for the current range
                for a, b in chunk:
                    for t0, t1, src, offset in sources:
                        lo, hi = max(a, t0), min(b, t1)
                        if lo >= hi:
                            continue
                        step = src.stride(1)
                        view = src.as_strided((2, hi - lo, n_fft), (src.stride(0), hop * step, step),
                                              src.storage_offset() + (offset + (lo - t0) * hop) * step)
                        rows = slice(k + lo - a, k + hi - a)
                        torch.mul(view, window, out=frames[:2, rows])
                        torch.sub(view[0], view[1], out=frames[2, rows])  # exact difference, windowed below
                    k += b - a
                frames[2].mul_(window)
                spec = torch.view_as_real(torch.fft.rfft(frames))  # (3, n, n_freqs, 2), a fresh tensor
                spec.square_()
                power = self._buffer("power", 3 * n * n_freqs).view(3, n, n_freqs)
                torch.add(spec[..., 0], spec[..., 1], out=power)
                del spec
                power = power.view(3 * n, n_freqs)
                mel = self._buffer("mel", mels * 3 * n).view(mels, 3 * n)
                for m0, m1, f0, f1, weights in bands:
                    torch.mm(weights, power[:, f0:f1].T, out=mel[m0:m1])
                out[:, :, column : column + n].copy_(mel.view(mels, 3, n).transpose(0, 1))
                column += n
            out.add_(self.log_offset).log_()

    def _frame_sources(self, x: torch.Tensor) -> list[tuple[int, int, torch.Tensor, int]]:
        """Where the centred frames of ``x`` ``(2, samples)`` come from: ``(first frame, end frame,
        source (2, length), offset of the first frame in the source)``, covering all frames in order.

        Inner frames lie inside the clip and are read from ``x`` itself; the frames that overlap the
        ``n_fft // 2`` padding at either end come from short padded copies of the clip's ends. A clip too
        short for inner frames is padded whole.
        """
        samples, n_fft, hop = x.shape[-1], self.n_fft, self.hop_length
        half = n_fft // 2
        frames = self._num_frames(samples)
        first = -(-half // hop)  # frames before this one start in the left padding
        end = min(frames, (samples + half - n_fft) // hop + 1)  # frames from this one on end in the right padding
        if end <= first:
            padded = torch.nn.functional.pad(x.unsqueeze(0), (half, half), mode=self.pad_mode)[0]
            return [(0, frames, padded, 0)]
        if self.pad_mode == "reflect":
            left, right = x[:, 1 : half + 1].flip(-1), x[:, samples - half - 1 : samples - 1].flip(-1)
        else:
            left = right = x.new_zeros(2, half)
        head = torch.cat([left, x[:, : (first - 1) * hop + n_fft - half]], dim=-1)
        tail = torch.cat([x[:, end * hop - half :], right], dim=-1)
        return [(0, first, head, 0), (first, end, x, first * hop - half), (end, frames, tail, 0)]

    def _buffer(self, name: str, numel: int) -> torch.Tensor:
        """This thread's workspace buffer ``name`` with at least ``numel`` float32 elements (flat).

        Made outside inference mode, so that it can be written in and out of it alike.
        """
        pool = self._local.__dict__
        buffer = pool.get(name)
        if buffer is None or buffer.numel() < numel:
            with torch.inference_mode(False):
                buffer = torch.empty(numel)
            pool[name] = buffer
        return buffer[:numel]

    def _mel_bands(self) -> list[tuple[int, int, int, int, torch.Tensor]]:
        if self._bands is None:
            self._bands = mel_bands(self._fbank)
        return self._bands

    # -- the batched path (other devices) ----------------------------------------------------------

    def _batch_stft(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`batch` for a prepared (and cropped) ``(B, 2, samples)`` with :meth:`_logmel_stft`."""
        logmel = self._logmel_stft(self._pad(x))  # (B, 3, M, T)
        frames = logmel.shape[-1]
        starts = segment_starts(frames, self.segments, self.segment_frames).to(logmel.device)
        index = starts[:, None] + torch.arange(self.segment_frames, device=logmel.device)  # (N, frames)
        segments = logmel[..., index]  # (B, 3, M, N, frames)
        return segments.permute(0, 3, 1, 2, 4).contiguous()

    def _logmel_stft(self, x: torch.Tensor) -> torch.Tensor:
        """Full log-mel ``(B, 3, n_mels, frames)`` of a padded ``(B, 2, samples)`` in one go, with
        ``torch.stft`` and the dense filter bank: the path for GPUs (any device works)."""
        batch, _, samples = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            three = torch.stack([x[:, 0], x[:, 1], x[:, 0] - x[:, 1]], dim=1).reshape(batch * 3, samples)
            window, fbank = self._on(x.device)
            spec = torch.stft(
                three, self.n_fft, self.hop_length, window=window, center=True, pad_mode=self.pad_mode,
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (B*3, n_freqs, T)
            mel = torch.matmul(fbank, power)  # (B*3, M, T)
            logmel = torch.log(mel + self.log_offset)
        return logmel.reshape(batch, 3, self.n_mels, -1)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The window and filter bank on ``device`` (copied once per device)."""
        if device not in self._constants:
            self._constants[device] = (self._window.to(device), self._fbank.to(device))
        return self._constants[device]

    # -- shared ----------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        # device copies, workspaces and the banded filter bank are rebuilt where the frontend goes
        return {**self.__dict__, "_constants": {}, "_bands": None, "_local": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _num_frames(self, samples: int) -> int:
        """Centred frames of ``samples`` samples (``torch.stft(center=True)``, librosa alike)."""
        half = self.n_fft // 2
        return 1 + (samples + 2 * half - self.n_fft) // self.hop_length

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(..., samples)`` at the end to ``clip_samples``."""
        if x.shape[-1] < self.clip_samples:
            x = torch.nn.functional.pad(x, (0, self.clip_samples - x.shape[-1]))
        return x

    def _prepare(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Check shape, make stereo float32 at the working sample rate: ``(B, 2, samples)``."""
        x = torch.as_tensor(waveforms)
        if x.dim() != 3:
            raise ValueError(f"expected waveforms (batch, channels, samples), got shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype in (torch.int16, torch.int32)):
            raise TypeError(f"expected float or int16/int32 samples, got {x.dtype}")
        if x.dtype == torch.int16:
            x = x.to(torch.float32) / 32768.0
        elif x.dtype == torch.int32:
            x = x.to(torch.float32) / 2147483648.0
        x = x.to(torch.float32)
        channels = x.shape[1]
        if channels == 2 and self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
            channels = 1
        if channels == 1:
            x = x.expand(-1, 2, -1)
        elif channels != 2:
            raise ValueError(f"expected mono or stereo audio, got {channels} channels")
        if x.shape[-1] == 0:
            raise ValueError("the waveform has no samples")
        if int(sample_rate) != self.sample_rate:
            if sample_rate <= 0:
                raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
            x = dsp.resample(x.contiguous(), int(sample_rate), self.sample_rate)
        return x


def mel_bands(fbank: torch.Tensor, groups: int = 16) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """The filter bank ``(M, n_freqs)`` as ``groups`` contiguous groups of bands, each with the FFT bins
    its bands cover: ``(first band, end band, first bin, end bin, weights (bands, bins))``.

    A triangular mel filter covers few bins and the bands' bins move up with the band, so multiplying
    each group only with its own bins gives the dense product with the same non-zero terms. The group
    boundaries minimise the multiply-adds (bands times bins, summed over groups; dynamic programming):
    at the defaults 7,467 per frame instead of 131,200 dense (17,152 with equal groups of 16 bands).
    Bands without any non-zero weight are allowed (a group of only those gets one zero column).
    """
    n_mels, n_freqs = fbank.shape
    groups = max(1, min(groups, n_mels))
    nonzero = fbank != 0
    bins = torch.arange(n_freqs)
    lo = torch.where(nonzero, bins, n_freqs).amin(1)  # n_freqs where a band is empty
    hi = torch.where(nonzero, bins + 1, 0).amax(1)  # 0 where a band is empty
    # span of bands a..e-1, as [a, e - 1]: running min / max from each first band a
    later = torch.arange(n_mels)[None, :] >= torch.arange(n_mels)[:, None]  # [a, b]: b >= a
    lo_run = torch.where(later, lo[None, :], n_freqs).cummin(1).values
    hi_run = torch.where(later, hi[None, :], 0).cummax(1).values
    size = (torch.arange(n_mels)[None, :] - torch.arange(n_mels)[:, None] + 1).double()
    cost = torch.full((n_mels + 1, n_mels + 1), math.inf, dtype=torch.float64)  # [a, e]: bands a..e-1
    cost[:-1, 1:] = torch.where(later, (hi_run - lo_run).clamp(min=0).double() * size, math.inf)
    best = torch.full((n_mels + 1,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    choices = []
    for _ in range(groups):  # best[e]: least cost of bands 0..e-1 in the groups so far
        total = best[:, None] + cost
        best, arg = total.min(0)
        choices.append(arg)
    edges, e = [n_mels], n_mels
    for arg in reversed(choices):
        e = int(arg[e])
        edges.append(e)
    edges.reverse()
    out = []
    for a, e in zip(edges[:-1], edges[1:]):
        f0, f1 = int(lo_run[a, e - 1]), int(hi_run[a, e - 1])
        if f1 <= f0:
            f0, f1 = 0, 1
        out.append((a, e, f0, f1, fbank[a:e, f0:f1].contiguous()))
    return out


def _used_frames(starts: list[int], length: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Frames that segments of ``length`` frames at ``starts`` use, as sorted disjoint ranges, and each
    segment's first column when those ranges are laid side by side."""
    ranges: list[list[int]] = []
    for s in sorted(starts):
        if ranges and s <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], s + length)
        else:
            ranges.append([s, s + length])
    columns = []
    for s in starts:
        base = 0
        for a, b in ranges:
            if a <= s < b:
                columns.append(base + s - a)
                break
            base += b - a
    return [(a, b) for a, b in ranges], columns


def _chunks(ranges: list[tuple[int, int]], cap: int):
    """``ranges`` cut and grouped into chunks of at most ``cap`` frames, in order, as even as they can
    be (so that each chunk's fresh FFT output reuses the memory of the one before)."""
    total = sum(b - a for a, b in ranges)
    cap = -(-total // -(-total // cap)) if total else cap
    chunk: list[tuple[int, int]] = []
    size = 0
    for a, b in ranges:
        while a < b:
            take = min(b - a, cap - size)
            chunk.append((a, a + take))
            size, a = size + take, a + take
            if size == cap:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"dcase-logmel: {key} = {value!r} is invalid; expected {expected}")


def dcase_logmel(
    *,
    sample_rate: int = 48000,
    n_fft: int = 2048,
    hop_length: int = 1024,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
    segments: int = 8,
    segment_frames: int = 80,
    clip_seconds: float = 10.0,
    log_offset: float = 1e-8,
    long_clips: Literal["segment", "crop"] = "segment",
    pad_mode: Literal["reflect", "constant"] = "reflect",
    channels: int = 2,
) -> DcaseLogMel:
    """Three-channel (L, R, L-R) HTK log-mel segments of the ATReSN-Net paper (docs/method.md section 2)."""
    return DcaseLogMel(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
        f_max=f_max, segments=segments, segment_frames=segment_frames, clip_seconds=clip_seconds,
        log_offset=log_offset, long_clips=long_clips, pad_mode=pad_mode, channels=channels,
    )


@hookimpl
def asczoo_register_frontends(register):
    register(PLUGIN, dcase_logmel)
