"""The ``dcase-logmel`` frontend: the paper's three-channel log-mel segments (SPEC section 2).

Per clip: left, right and left-minus-right waveforms; for each a centred power STFT (Hann window of
``n_fft``, hop ``hop_length``), 128 HTK mel bands without area normalisation from ``f_min`` to
``f_max`` (default: Nyquist), then ``log(x + log_offset)``; the spectrogram is cut into ``segments``
windows of ``segment_frames`` frames by the paper's hop rule (:func:`asczoo.frontend.segment_starts`).
At the defaults a 10 s, 48 kHz clip has 469 frames and becomes ``(8, 3, 128, 80)``.

Input choices, all deliberate:

* mono input is duplicated to both sides (the difference channel is then zero); more than two channels
  is an error, since it is not clear which pair is the binaural one;
* other sample rates are resampled to ``sample_rate`` (``torchaudio.functional.resample``, sinc
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
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchaudio.functional as taf

from asczoo import hookimpl
from asczoo.frontend import segment_starts
from asczoo.interfaces import Frontend

PLUGIN = "dcase-logmel"


class DcaseLogMel(Frontend):
    """Three-channel (L, R, L-R) log-mel segments; see the module docstring for every choice."""

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
    ) -> None:
        _require(sample_rate > 0, "sample_rate", sample_rate, "a positive integer")
        _require(n_fft >= 2, "n_fft", n_fft, "an integer >= 2")
        _require(hop_length > 0, "hop_length", hop_length, "a positive integer")
        _require(n_mels > 0, "n_mels", n_mels, "a positive integer")
        _require(segments > 0, "segments", segments, "a positive integer")
        _require(segment_frames > 0, "segment_frames", segment_frames, "a positive integer")
        _require(clip_seconds > 0, "clip_seconds", clip_seconds, "a positive number of seconds")
        _require(log_offset > 0, "log_offset", log_offset, "a positive number")
        nyquist = sample_rate / 2
        top = nyquist if f_max is None else float(f_max)
        _require(0 <= f_min < top <= nyquist, "f_min/f_max", (f_min, f_max),
                 f"0 <= f_min < f_max <= sample_rate / 2 = {nyquist}")
        _require(long_clips in ("segment", "crop"), "long_clips", long_clips, "'segment' or 'crop'")
        _require(pad_mode in ("reflect", "constant"), "pad_mode", pad_mode, "'reflect' or 'constant'")
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
        self.output_shape = (self.segments, 3, self.n_mels, self.segment_frames)
        # (n_freqs, n_mels), HTK scale, no area normalisation: librosa's htk=True, norm=None
        self._fbank = taf.melscale_fbanks(
            self.n_fft // 2 + 1, float(f_min), top, self.n_mels, self.sample_rate, norm=None, mel_scale="htk"
        ).T.contiguous()
        self._window = torch.hann_window(self.n_fft, periodic=True)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

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
        logmel = self.logmel(x)  # (B, 3, M, T)
        frames = logmel.shape[-1]
        starts = segment_starts(frames, self.segments, self.segment_frames).to(logmel.device)
        index = starts[:, None] + torch.arange(self.segment_frames, device=logmel.device)  # (N, frames)
        segments = logmel[..., index]  # (B, 3, M, N, frames)
        return segments.permute(0, 3, 1, 2, 4).contiguous()

    # -- extras ----------------------------------------------------------------------------------

    @torch.no_grad()
    def logmel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Stereo ``(B, 2, samples)`` at ``sample_rate`` -> full log-mel ``(B, 3, n_mels, frames)``.

        Clips shorter than ``clip_seconds`` are zero-padded at the end first.
        """
        x = waveforms.to(torch.float32)
        if x.shape[-1] < self.clip_samples:
            x = torch.nn.functional.pad(x, (0, self.clip_samples - x.shape[-1]))
        batch, _, samples = x.shape
        device = x.device
        with torch.autocast(device_type=device.type, enabled=False):
            three = torch.stack([x[:, 0], x[:, 1], x[:, 0] - x[:, 1]], dim=1).reshape(batch * 3, samples)
            window, fbank = self._on(device)
            spec = torch.stft(
                three, self.n_fft, self.hop_length, window=window, center=True, pad_mode=self.pad_mode,
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (B*3, n_freqs, T)
            mel = torch.matmul(fbank, power)  # (B*3, M, T)
            logmel = torch.log(mel + self.log_offset)
        return logmel.reshape(batch, 3, self.n_mels, -1)

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

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The window and filter bank on ``device`` (copied once per device)."""
        if device not in self._constants:
            self._constants[device] = (self._window.to(device), self._fbank.to(device))
        return self._constants[device]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_constants": {}}  # device copies do not travel to worker processes

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
        if channels == 1:
            x = x.expand(-1, 2, -1)
        elif channels != 2:
            raise ValueError(f"expected mono or stereo audio, got {channels} channels")
        if x.shape[-1] == 0:
            raise ValueError("the waveform has no samples")
        if int(sample_rate) != self.sample_rate:
            if sample_rate <= 0:
                raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
            x = taf.resample(x.contiguous(), int(sample_rate), self.sample_rate)
        return x


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
) -> DcaseLogMel:
    """Three-channel (L, R, L-R) HTK log-mel segments of the ATReSN-Net paper (SPEC section 2)."""
    return DcaseLogMel(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
        f_max=f_max, segments=segments, segment_frames=segment_frames, clip_seconds=clip_seconds,
        log_offset=log_offset, long_clips=long_clips, pad_mode=pad_mode,
    )


@hookimpl
def asczoo_register_frontends(register):
    register(PLUGIN, dcase_logmel)
