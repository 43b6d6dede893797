"""Freq-MixStyle, device impulse responses and roll (plugin ``dcase-augmentations``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import asczoo
from asczoo.augment import one_hot
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
IRS = Path(__file__).parent / "fixtures" / "device_irs"


def batch(b=6, n=2, c=3, f=16, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, f, t, generator=g) * 3 + 1, one_hot(torch.arange(b) % 3, 3)


def test_freq_mixstyle_mixes_per_band_statistics_with_another_sample():
    x, y = batch()
    aug = asczoo.create_augmentation("freq-mixstyle", p=1.0, alpha=0.3, seed=4)
    out, targets = aug(x, y)
    assert targets is y
    mu = x.mean(dim=(1, 2, 4))  # (B, F)
    sig = (x.var(dim=(1, 2, 4)) + 1e-6).sqrt()
    out_mu, out_sig = out.mean(dim=(1, 2, 4)), out.var(dim=(1, 2, 4)).sqrt()
    # every sample's new band statistics are a convex mix of its own and one other sample's
    for i in range(x.shape[0]):
        found = False
        for j in range(x.shape[0]):
            lam = (out_mu[i] - mu[j]) / (mu[i] - mu[j]) if j != i else None
            if lam is not None and torch.allclose(lam, lam.mean().expand_as(lam), atol=1e-3):
                lam = lam.mean()
                assert -1e-3 <= lam <= 1 + 1e-3
                torch.testing.assert_close(out_sig[i], lam * sig[i] + (1 - lam) * sig[j], atol=1e-3, rtol=1e-3)
                found = True
        assert found or torch.allclose(out_mu[i], mu[i], atol=1e-4)
    again, _ = asczoo.create_augmentation("freq-mixstyle", p=1.0, alpha=0.3, seed=4)(x, y)
    torch.testing.assert_close(again, out)
    never, _ = asczoo.create_augmentation("freq-mixstyle", p=0.0)(x, y)
    assert never is x
    with pytest.raises(ValueError, match="alpha"):
        asczoo.create_augmentation("freq-mixstyle", alpha=0)


def test_roll_shifts_each_sample_circularly():
    x, y = batch()
    out, _ = asczoo.create_augmentation("roll", axis="time", max_shift=5, p=1.0, seed=1)(x, y)
    for i in range(x.shape[0]):
        shifts = [s for s in range(-5, 6) if torch.equal(out[i], torch.roll(x[i], s, dims=-1))]
        assert shifts, f"sample {i} is not a time roll of its input"
    out, _ = asczoo.create_augmentation("roll", axis="freq", max_shift=2, p=1.0, seed=1)(x, y)
    assert all(any(torch.equal(out[i], torch.roll(x[i], s, dims=-2)) for s in range(-2, 3)) for i in range(6))
    with pytest.raises(ValueError, match="axis"):
        asczoo.create_augmentation("roll", axis="channel")


def test_device_ir_gains_match_the_frontend_on_convolved_audio():
    """The log-mel shortcut against the real thing: frontend(h * x) - frontend(x) for broadband noise."""
    rate = 8000
    frontend = asczoo.create_frontend("dcase-logmel", sample_rate=rate, n_fft=256, hop_length=128,
                                      n_mels=32, segments=1, segment_frames=120, clip_seconds=2.0)
    aug = asczoo.create_augmentation("device-ir", folder=str(IRS), p=1.0, sample_rate=rate, n_fft=256, n_mels=32)
    responses = aug.responses
    noise = torch.randn(2, 2 * rate, generator=torch.Generator().manual_seed(0))
    plain = frontend(noise, rate)
    for index in range(len(responses)):
        convolved = frontend(responses.convolve(noise, index), rate)
        measured = (convolved - plain)[:, :2].mean(dim=(0, 1, 3))  # L and R channels, mean over frames
        torch.testing.assert_close(measured, responses.log_gains[index], atol=0.15, rtol=0)


def test_device_ir_resamples_and_applies_one_response_per_sample(tmp_path):
    aug = asczoo.create_augmentation("device-ir", folder=str(IRS), p=1.0, sample_rate=8000, n_fft=64, n_mels=16, seed=0)
    lengths = {path.name: h.numel() for path, h in zip(aug.responses.files, aug.responses.responses)}
    assert lengths == {"bright_16k.wav": 3, "lowpass_8k.wav": 4}  # the 16 kHz response resampled to 8 kHz
    x, y = batch()
    out, _ = aug(x, y)
    added = (out - x)[:, 0, 0, :, 0]
    for row in added:
        assert any(torch.allclose(row, g, atol=1e-5) for g in aug.responses.log_gains)
    off, _ = asczoo.create_augmentation("device-ir", folder=str(IRS), p=0.0, n_fft=64, n_mels=16, sample_rate=8000)(x, y)
    torch.testing.assert_close(off, x)
    with pytest.raises(ValueError, match="n_mels"):
        aug(*batch(f=20))


def test_device_ir_bad_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}.*no impulse responses"):
        asczoo.create_augmentation("device-ir", folder=str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        asczoo.create_augmentation("device-ir", folder=str(tmp_path / "missing"))
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="broken.wav.*not a readable audio file"):
        asczoo.create_augmentation("device-ir", folder=str(tmp_path))
    (tmp_path / "broken.wav").unlink()
    soundfile.write(tmp_path / "silent.wav", np.zeros(8, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="silent.wav.*silent"):
        asczoo.create_augmentation("device-ir", folder=str(tmp_path))


def test_device_ir_at_the_recipes_size():
    """As tau2022-lc-* use it: 44.1 kHz, n_fft 2048, 64 bands; the 8 and 16 kHz responses resampled."""
    aug = asczoo.create_augmentation("device-ir", folder=str(IRS), p=1.0, sample_rate=44100, n_fft=2048, n_mels=64,
                                      seed=0)
    gains = aug.responses.log_gains
    assert gains.shape == (2, 64) and torch.isfinite(gains).all()
    # the 8 kHz response says nothing above 4 kHz: those bands are left as they are, not silenced
    lowpass = [f.name for f in aug.responses.files].index("lowpass_8k.wav")
    assert gains[lowpass, -10:].abs().max() < 1e-6 and gains[lowpass, :10].abs().max() > 0.1
    x, y = batch(b=4, n=8, f=64, t=32)
    out, _ = aug(x, y)
    assert out.shape == x.shape and not torch.equal(out, x)
