"""Signal-processing primitives asczoo needs from torchaudio, in plain torch.

torchaudio's Python functions are pure torch, but ``import torchaudio`` loads its native library, which
loads only beside the one torch release it was built for (torchaudio 2.11.1 fails beside torch 2.11.0
and beside every CPU-only torch build). asczoo needs three of its functions, so they are written here
with torchaudio's exact arithmetic (plus :class:`StreamingResampler`, the same resampling block by
block, for recordings too long to hold in memory), and asczoo runs beside any supported torch with no torchaudio at
all. ``tests/test_dsp.py`` holds each against torchaudio wherever torchaudio loads (CI's locked set).
"""

from __future__ import annotations

import math

import torch

__all__ = ["resample", "StreamingResampler", "melscale_fbanks", "fftconvolve"]


def _sinc_resample_kernel(orig: int, new: int, *, lowpass_filter_width: int, rolloff: float,
                          device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc kernels, one per output phase: ``(new, 1, 2 * width + orig)``."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base / orig)
    return kernels, width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited sinc resampling of ``(..., samples)``, as ``torchaudio.functional.resample``.

    The defaults are torchaudio's (``sinc_interp_hann``, 6 zero crossings, rolloff 0.99). The output has
    ``ceil(new_freq * samples / orig_freq)`` samples and the input's dtype and device.
    """
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    if not waveform.is_floating_point():
        raise TypeError(f"resample: expected a floating-point waveform, got {waveform.dtype}")
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_resample_kernel(orig, new, lowpass_filter_width=lowpass_filter_width,
                                          rolloff=rolloff, device=waveform.device, dtype=waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[..., : math.ceil(new * length / orig)]
    return out.reshape(*shape[:-1], out.shape[-1])


class StreamingResampler:
    """:func:`resample` of a signal that arrives in blocks, with the same output as resampling it whole.

    ``push(block (..., samples))`` returns the output samples that are final so far and ``flush()`` the
    rest; their concatenation is ``resample(whole, orig_freq, new_freq)`` (to float rounding: the same
    kernel meets the same input samples). It keeps the last ``2 * width + orig`` input samples between
    blocks, the kernel's reach, so its memory does not grow with the signal: that is what lets
    ``asczoo predict`` classify a recording of hours without reading it whole.
    """

    def __init__(self, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        orig_freq, new_freq = int(orig_freq), int(new_freq)
        if orig_freq <= 0 or new_freq <= 0:
            raise ValueError(f"StreamingResampler: sample rates must be positive, got {orig_freq} -> {new_freq}")
        self.identity = orig_freq == new_freq
        gcd = math.gcd(orig_freq, new_freq)
        self.orig, self.new = orig_freq // gcd, new_freq // gcd
        self.kernel, self.width = (None, 0) if self.identity else _sinc_resample_kernel(
            self.orig, self.new, lowpass_filter_width=lowpass_filter_width, rolloff=rolloff,
            device=torch.device(device), dtype=dtype)
        self._buffer: torch.Tensor | None = None  # input not yet fully used, after ``width`` leading zeros
        self.samples_in = 0
        self.samples_out = 0

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """The output samples that ``block`` (``(..., samples)``, same leading shape every time) completes."""
        if self.identity:
            self.samples_in += block.shape[-1]
            self.samples_out += block.shape[-1]
            return block
        if not block.is_floating_point():
            raise TypeError(f"StreamingResampler: expected a floating-point block, got {block.dtype}")
        if self._buffer is None:  # the whole-signal path pads ``width`` zeros in front
            self._buffer = block.new_zeros((*block.shape[:-1], self.width))
        self.samples_in += block.shape[-1]
        self._buffer = torch.cat([self._buffer, block.to(self._buffer.dtype)], dim=-1)
        return self._convolve()

    def flush(self) -> torch.Tensor:
        """The last output samples (the whole-signal path's zero padding at the end); ends the stream."""
        if self.identity or self._buffer is None:
            return torch.zeros(0) if self._buffer is None else self._buffer[..., :0]
        self._buffer = torch.nn.functional.pad(self._buffer, (0, self.width + self.orig))
        out = self._convolve()
        total = math.ceil(self.new * self.samples_in / self.orig)  # as resample() truncates
        keep = total - (self.samples_out - out.shape[-1])
        self.samples_out += keep - out.shape[-1]
        self._buffer = None
        return out[..., :keep]

    def _convolve(self) -> torch.Tensor:
        """Every output frame whose kernel window lies in the buffer; the buffer keeps the rest."""
        buffer = self._buffer
        reach = self.kernel.shape[-1]
        frames = (buffer.shape[-1] - reach) // self.orig + 1 if buffer.shape[-1] >= reach else 0
        lead = buffer.shape[:-1]
        if frames <= 0:
            return buffer.new_zeros((*lead, 0))
        flat = buffer.reshape(-1, buffer.shape[-1])[:, : (frames - 1) * self.orig + reach]
        out = torch.nn.functional.conv1d(flat[:, None], self.kernel, stride=self.orig)
        out = out.transpose(1, 2).reshape(flat.shape[0], -1).reshape(*lead, -1)
        self._buffer = buffer[..., frames * self.orig:].clone()  # drop the used input (and its storage)
        self.samples_out += out.shape[-1]
        return out


def _hz_to_mel_htk(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, *,
                    norm: str | None = None, mel_scale: str = "htk") -> torch.Tensor:
    """Triangular HTK mel filter bank ``(n_freqs, n_mels)``, as ``torchaudio.functional.melscale_fbanks``.

    Only the HTK scale is offered (the one asczoo's frontends use); ``norm="slaney"`` divides each
    triangle by its width in Hz (area normalisation), ``None`` leaves its peak at 1.
    """
    if mel_scale != "htk":
        raise ValueError(f"melscale_fbanks: mel_scale {mel_scale!r} is not offered; use 'htk'")
    if norm not in (None, "slaney"):
        raise ValueError(f"melscale_fbanks: norm must be None or 'slaney', got {norm!r}")
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up))
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    return fb


def fftconvolve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Full linear convolution along the last axis through the FFT (``torchaudio.functional.fftconvolve``)."""
    n = x.shape[-1] + y.shape[-1] - 1
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(y, n=n), n=n)
