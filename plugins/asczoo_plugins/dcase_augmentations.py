"""Augmentations of the DCASE Task 1 low-complexity systems: Freq-MixStyle, device impulse responses, roll.

Like the built-in batch augmentations (:mod:`asczoo_plugins.augmentations`) each works on a batch
``features (B, N, C, F, T)`` of log-mel segments with ``targets (B, K)``, on the batch's device, in
training only (the engine applies augmentations to training batches, never in evaluation), and is
deterministic under ``seed``. Time/frequency masking is the catalogue's ``spec-mask``.

* ``freq-mixstyle`` (Schmid et al., CP-JKU, DCASE 2022/2023): with probability ``p`` per batch,
  normalise every sample per frequency band (statistics over segments, channels and frames), then
  re-scale it with the statistics mixed with those of another sample of the batch, with weights
  ``lam ~ Beta(alpha, alpha)`` per sample. Device characteristics live mostly in the per-band level
  and spread, so mixing them simulates unseen devices. Targets are unchanged.
* ``device-ir``: convolving a recording with a device's impulse response ``h`` multiplies its
  short-time spectrum by ``H(f)``; in a log-mel map that is adding ``log(g_m)``, ``g_m`` the mel
  band's mean of ``|H(f)|^2`` (band weights of the frontend's filter bank). **Where it runs**: here, on
  the cached log-mel batch, on the training device (GPU when there is one). Cost: the responses are
  read and turned into ``(n_mels,)`` gains once, when the augmentation is built; a batch costs one
  add, and the feature cache stays as it is (no extraction per response, no extra disk). The price is
  an approximation: it is exact for responses much shorter than the STFT window whose response is
  smooth within a mel band (microphone and device responses: a few milliseconds; the test checks it
  against the frontend on convolved audio), and it drops the time smearing of long, reverberant
  responses. For those, :meth:`DeviceImpulseResponses.convolve` convolves a waveform exactly (use it
  to build augmented copies before the frontend). Responses at another sample rate are resampled; above
  a response's own Nyquist frequency (an 8 kHz response says nothing above 4 kHz) the bands are left as they are.
* ``roll``: circular shift along time (``axis: time``, by up to ``max_shift`` frames, the same for
  every segment of a sample) or frequency (``axis: freq``, up to ``max_shift`` mel bands).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from asczoo import dsp, hookimpl
from asczoo.data import check_batch
from asczoo_plugins.augmentations import _probability, _Random

AUDIO_SUFFIXES = (".wav", ".flac")


def _beta(random: _Random, alpha: float, count: int) -> torch.Tensor:
    """``count`` draws of Beta(alpha, alpha) on the CPU: from torch's global generator, or from the
    seeded generator (as :class:`~asczoo_plugins.augmentations.Mixup` does)."""
    generator = random.generator(torch.device("cpu"))
    if generator is None:
        a = torch.tensor(float(alpha))
        return torch.distributions.Beta(a, a).sample((count,))
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=count)).float()


class FreqMixStyle:
    """Mix per-frequency statistics across the batch; see the module docstring."""

    def __init__(self, alpha: float, p: float, eps: float, seed: int | None) -> None:
        self.alpha, self.p, self.eps, self.random = alpha, p, eps, _Random(seed)

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "freq-mixstyle")
        device, batch = features.device, features.shape[0]
        if batch < 2 or float(self.random.rand(1, device=device)) >= self.p:
            return features, targets
        x = features.float()
        mu = x.mean(dim=(1, 2, 4), keepdim=True)  # (B, 1, 1, F, 1): per sample and frequency band
        sig = (x.var(dim=(1, 2, 4), keepdim=True) + self.eps).sqrt()
        normed = (x - mu) / sig
        lam = _beta(self.random, self.alpha, batch).to(device).view(-1, 1, 1, 1, 1)
        order = torch.randperm(batch, generator=self.random.generator(torch.device("cpu"))).to(device)
        mixed_mu = lam * mu + (1 - lam) * mu[order]
        mixed_sig = lam * sig + (1 - lam) * sig[order]
        return (normed * mixed_sig + mixed_mu).to(features.dtype), targets

    def __repr__(self) -> str:
        return f"FreqMixStyle(alpha={self.alpha}, p={self.p})"


def _read_audio(path: Path) -> tuple[torch.Tensor, int]:
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:  # LibsndfileError subclasses RuntimeError
        raise ValueError(f"device-ir: {path}: not a readable audio file ({exc})") from None
    if data.shape[0] == 0:
        raise ValueError(f"device-ir: {path}: the impulse response is empty")
    return torch.from_numpy(data.mean(axis=1)), int(rate)


class DeviceImpulseResponses:
    """Device impulse responses from a folder, as waveforms at ``sample_rate`` and as log-mel gains."""

    def __init__(self, folder: str | os.PathLike, *, sample_rate: int, n_fft: int, n_mels: int,
                 f_min: float, f_max: float | None) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"device-ir: impulse-response folder {root} does not exist or is not a folder (set the "
                             "augmentation's folder option; in a training recipe --set stages.STAGE.augment.I.folder=PATH)")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"device-ir: {root} holds no impulse responses (expected {', '.join(AUDIO_SUFFIXES)} files)")
        self.files, self.sample_rate = files, int(sample_rate)
        self.responses: list[torch.Tensor] = []
        self.rates: list[int] = []  # each response's own rate: it says nothing above its Nyquist frequency
        for path in files:
            h, rate = _read_audio(path)
            self.rates.append(rate)
            if rate != self.sample_rate:  # a response recorded at another rate: resample it
                h = dsp.resample(h, rate, self.sample_rate)
            if not torch.isfinite(h).all() or float(h.abs().max()) == 0.0:
                raise ValueError(f"device-ir: {path}: the impulse response is silent or not finite")
            self.responses.append(h)
        top = float(f_max) if f_max is not None else self.sample_rate / 2
        gains = []
        for h, rate in zip(self.responses, self.rates):
            # |H(f)|^2 on at least the frontend's FFT grid (finer for responses longer than n_fft), and its
            # mean over each mel band with the band's triangular weights (dcase-logmel's HTK filter bank)
            size = max(int(n_fft), h.numel())
            fbank = dsp.melscale_fbanks(size // 2 + 1, float(f_min), top, int(n_mels), self.sample_rate,
                                        norm=None, mel_scale="htk")  # (n_freqs, n_mels)
            weights = fbank / fbank.sum(dim=0).clamp_min(1e-12)
            power = torch.fft.rfft(h, n=size).abs().pow(2)
            # above the rate a response was recorded at, it is unknown (resampling leaves zeros there):
            # leave those frequencies as they are rather than silencing them
            freqs = torch.arange(power.numel()) * (self.sample_rate / size)
            power = torch.where(freqs > rate / 2, torch.ones_like(power), power)
            gains.append(power @ weights)
        self.log_gains = torch.log(torch.stack(gains).clamp_min(1e-10))  # (R, n_mels)

    def __len__(self) -> int:
        return len(self.responses)

    def convolve(self, waveform: torch.Tensor, index: int) -> torch.Tensor:
        """``waveform (..., samples)`` at ``sample_rate`` convolved with response ``index``, same length."""
        h = self.responses[index].to(waveform.device, waveform.dtype)
        return dsp.fftconvolve(waveform, h.expand(*waveform.shape[:-1], -1))[..., : waveform.shape[-1]]


class DeviceIR:
    """Add a random device response's log-mel gains to each sample with probability ``p``."""

    def __init__(self, responses: DeviceImpulseResponses, p: float, seed: int | None) -> None:
        self.responses, self.p, self.random = responses, p, _Random(seed)
        self._gains: dict[torch.device, torch.Tensor] = {}

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "device-ir")
        gains = self.responses.log_gains
        if features.shape[3] != gains.shape[1]:
            raise ValueError(f"device-ir: the features have {features.shape[3]} mel bands but the responses were "
                             f"prepared for n_mels={gains.shape[1]}; set the augmentation's n_mels (and sample_rate, "
                             "n_fft, f_min, f_max) to the model's frontend")
        device, batch = features.device, features.shape[0]
        if device not in self._gains:
            self._gains[device] = gains.to(device)
        apply = self.random.rand(batch, device=device) < self.p
        which = self.random.randint(len(self.responses), batch, device=device)
        add = self._gains[device][which] * apply.unsqueeze(1)  # (B, F)
        return (features + add.view(batch, 1, 1, -1, 1).to(features.dtype)), targets

    def __repr__(self) -> str:
        return f"DeviceIR({len(self.responses)} responses, p={self.p})"


class Roll:
    """Circular shift of each sample by up to ``max_shift`` frames (time) or mel bands (freq)."""

    def __init__(self, axis: str, max_shift: int, p: float, seed: int | None) -> None:
        self.axis, self.max_shift, self.p, self.random = axis, max_shift, p, _Random(seed)

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "roll")
        device, batch = features.device, features.shape[0]
        dim = 4 if self.axis == "time" else 3
        size = features.shape[dim]
        shift = self.random.randint(2 * self.max_shift + 1, batch, device=device) - self.max_shift
        shift = shift * (self.random.rand(batch, device=device) < self.p)
        index = (torch.arange(size, device=device).unsqueeze(0) - shift.unsqueeze(1)) % size  # (B, size)
        shape = [batch, 1, 1, 1, 1]
        shape[dim] = size
        index = index.view(shape).expand_as(features)
        return torch.gather(features, dim, index), targets

    def __repr__(self) -> str:
        return f"Roll(axis={self.axis!r}, max_shift={self.max_shift}, p={self.p})"


def freq_mixstyle(*, alpha: float = 0.3, p: float = 0.4, eps: float = 1e-6, seed: int | None = None) -> FreqMixStyle:
    """Freq-MixStyle: mix per-frequency mean and std across the batch (CP-JKU's alpha 0.3, p 0.4)."""
    if alpha <= 0:
        raise ValueError(f"freq-mixstyle: alpha = {alpha!r} must be positive")
    if eps <= 0:
        raise ValueError(f"freq-mixstyle: eps = {eps!r} must be positive")
    _probability("freq-mixstyle", p)
    return FreqMixStyle(alpha, p, eps, seed)


def device_ir(*, folder: str, p: float = 0.4, sample_rate: int = 44100, n_fft: int = 2048, n_mels: int = 128,
              f_min: float = 0.0, f_max: float | None = None, seed: int | None = None) -> DeviceIR:
    """Device impulse responses from ``folder`` (.wav/.flac, resampled to ``sample_rate``), applied
    as log-mel gains with probability ``p`` per sample; the frontend options must match the model's."""
    _probability("device-ir", p)
    responses = DeviceImpulseResponses(folder, sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels,
                                       f_min=f_min, f_max=f_max)
    return DeviceIR(responses, p, seed)


def roll(*, axis: Literal["time", "freq"] = "time", max_shift: int = 10, p: float = 1.0,
         seed: int | None = None) -> Roll:
    """Circular roll along time or frequency by a random shift in ``[-max_shift, max_shift]``."""
    if axis not in ("time", "freq"):
        raise ValueError(f"roll: axis = {axis!r} must be 'time' or 'freq'")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"roll: max_shift = {max_shift!r} must be a non-negative integer")
    _probability("roll", p)
    return Roll(axis, max_shift, p, seed)


@hookimpl
def asczoo_register_augmentations(register):
    register("freq-mixstyle", freq_mixstyle)
    register("device-ir", device_ir)
    register("roll", roll)
