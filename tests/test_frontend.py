"""The dcase-logmel frontend: shapes, values for known signals, input handling, librosa agreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import asczoo
from asczoo.arguments import RecipeError
from asczoo.frontend import config_key, segment_starts
from data_fixtures import one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"plugin": "dcase-logmel", "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32,
        "segments": 4, "segment_frames": 24, "clip_seconds": 2.0}


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5, channels: int = 2) -> torch.Tensor:
    t = torch.arange(int(round(seconds * rate)), dtype=torch.float64) / rate
    wave = (amplitude * torch.sin(2 * math.pi * freq * t)).to(torch.float32)
    return wave.expand(channels, -1).clone()


def noise(seconds: float, rate: int, seed: int = 0, channels: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(channels, int(round(seconds * rate)), generator=g)


# -- shapes and the segmenting rule ------------------------------------------------------------------

def test_paper_defaults_shape_frames_and_segment_hop():
    fe = asczoo.create_frontend()
    assert fe.output_shape == (8, 3, 128, 80)
    assert fe.sample_rate == 48000
    assert fe.clip_frames == 469  # centred frames of 10 s at 48 kHz, hop 1024
    assert segment_starts(469, 8, 80).tolist() == [0, 55, 110, 165, 220, 275, 330, 385]
    x = noise(10.0, 48000)
    features = fe(x, 48000)
    assert features.shape == (8, 3, 128, 80) and features.dtype == torch.float32
    full = fe.logmel(x.unsqueeze(0))[0]
    assert full.shape == (3, 128, 469)
    for s, start in enumerate(range(0, 386, 55)):
        torch.testing.assert_close(features[s], full[..., start : start + 80])


def test_segment_starts_rule_and_single_segment():
    assert segment_starts(63, 4, 24).tolist() == [0, 13, 26, 39]
    assert segment_starts(100, 1, 20).tolist() == [40]  # one segment: centred
    with pytest.raises(ValueError, match="cannot hold"):
        segment_starts(10, 2, 20)


def test_tiny_config_shape_and_roundtrip():
    fe = asczoo.create_frontend(**TINY)
    assert fe.output_shape == (4, 3, 32, 24)
    assert fe(noise(2.0, 8000), 8000).shape == (4, 3, 32, 24)
    rebuilt = asczoo.create_frontend(**fe.config)
    assert rebuilt.config == fe.config
    assert json.loads(json.dumps(fe.config)) == fe.config  # serialisable
    assert config_key(fe.config) == config_key(rebuilt.config)
    assert config_key(fe.config) != config_key(asczoo.create_frontend(**{**TINY, "n_mels": 16}).config)
    named = asczoo.create_frontend("dcase-logmel", **{k: v for k, v in TINY.items() if k != "plugin"})
    assert named.config == fe.config


# -- values for known signals ------------------------------------------------------------------------

def test_sine_at_a_bin_centre_matches_the_analytic_power():
    """A sine of amplitude A on FFT bin k0 under a periodic Hann window of n_fft points has power
    (A n/4)^2 in bin k0 and (A n/8)^2 in each neighbour; the mel band is their weighted sum."""
    fe = asczoo.create_frontend(**TINY)
    n, rate, k0, amp = 256, 8000, 40, 0.5
    x = sine(k0 * rate / n, 2.0, rate, amp)
    logmel = fe.logmel(x.unsqueeze(0))[0]  # (3, 32, T)
    fbank = fe._fbank  # (n_mels, n_freqs), HTK, unnormalised
    power = torch.zeros(n // 2 + 1, dtype=torch.float64)
    power[k0] = (amp * n / 4) ** 2
    power[k0 - 1] = power[k0 + 1] = (amp * n / 8) ** 2
    expected = torch.log(fbank.double() @ power + 1e-8)
    middle = logmel[0, :, 10:-10].double()  # frames away from the edges
    loud = expected > expected.max() - 8  # bands the sine reaches (others are leakage-level)
    assert loud.sum() >= 1
    torch.testing.assert_close(middle[loud], expected[loud, None].expand_as(middle[loud]), atol=2e-3, rtol=0)
    assert int(middle.mean(dim=1).argmax()) == int(expected.argmax())
    # identical channels: the difference channel is silent, i.e. log(1e-8)
    torch.testing.assert_close(logmel[2], torch.full_like(logmel[2], math.log(1e-8)))
    torch.testing.assert_close(logmel[0], logmel[1])


def test_silence_is_log_offset_everywhere():
    fe = asczoo.create_frontend(**{**TINY, "log_offset": 1e-6})
    features = fe(torch.zeros(2, 16000), 8000)
    torch.testing.assert_close(features, torch.full_like(features, math.log(1e-6)))


def test_left_minus_right_channel_is_taken_on_the_waveform():
    fe = asczoo.create_frontend(**TINY)
    left, right = noise(2.0, 8000, seed=1, channels=1)[0], noise(2.0, 8000, seed=2, channels=1)[0]
    a = fe(torch.stack([left, right]), 8000)
    diff_only = fe(torch.stack([left - right, torch.zeros_like(left)]), 8000)
    torch.testing.assert_close(a[:, 2], diff_only[:, 0], atol=1e-4, rtol=1e-4)
    swapped = fe(torch.stack([right, left]), 8000)
    torch.testing.assert_close(swapped[:, 0], a[:, 1])
    torch.testing.assert_close(swapped[:, 2], a[:, 2], atol=1e-4, rtol=1e-4)  # |R-L|^2 == |L-R|^2


# -- input handling ----------------------------------------------------------------------------------

def test_mono_is_duplicated_to_both_sides():
    fe = asczoo.create_frontend(**TINY)
    mono = noise(2.0, 8000, channels=1)
    out_2d = fe(mono, 8000)
    out_1d = fe(mono[0], 8000)
    stereo = fe(mono.expand(2, -1), 8000)
    torch.testing.assert_close(out_2d, stereo)
    torch.testing.assert_close(out_1d, stereo)
    torch.testing.assert_close(out_2d[:, 2], torch.full_like(out_2d[:, 2], math.log(1e-8)))


def test_44k1_input_is_resampled_to_the_working_rate():
    config = {**TINY, "sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 40}
    fe = asczoo.create_frontend(**config)
    native = fe(sine(1000.0, 2.0, 16000), 16000)
    from_44k = fe(sine(1000.0, 2.0, 44100), 44100)
    assert from_44k.shape == native.shape == (4, 3, 40, 24)
    peak = native[:, 0].mean(dim=(0, 2)).argmax()
    assert from_44k[:, 0].mean(dim=(0, 2)).argmax() == peak
    inner = native[1:3, 0]  # segments away from the clip's edges (resampling edge effects)
    strong = inner > inner.max() - 10  # bands the tone fills
    assert (from_44k[1:3, 0][strong] - inner[strong]).abs().max() < 0.01
    # int16 samples are scaled like soundfile does
    as_int = (sine(1000.0, 2.0, 16000) * 32768).round().clamp(-32768, 32767).to(torch.int16)
    loud = native > native.max() - 10  # quantisation noise only shows in the near-silent bands
    torch.testing.assert_close(fe(as_int, 16000)[loud], native[loud], atol=2e-3, rtol=0)


def test_short_clips_are_zero_padded_at_the_end():
    fe = asczoo.create_frontend(**TINY)
    short = noise(0.5, 8000)
    out = fe(short, 8000)
    assert out.shape == fe.output_shape
    padded = torch.nn.functional.pad(short, (0, 16000 - 4000))
    torch.testing.assert_close(out, fe(padded, 8000))
    assert torch.allclose(out[-1, 0], torch.tensor(math.log(1e-8)))  # the last segment is all padding


def test_long_clips_segment_over_the_whole_clip_or_crop():
    spread = asczoo.create_frontend(**TINY)
    crop = asczoo.create_frontend(**{**TINY, "long_clips": "crop"})
    x = torch.cat([noise(2.0, 8000, seed=3), torch.zeros(2, 8000 * 4)], dim=1)  # 6 s: noise then silence
    a, b = spread(x, 8000), crop(x, 8000)
    assert a.shape == b.shape == (4, 3, 32, 24)
    torch.testing.assert_close(b, crop(x[:, :16000], 8000))
    assert a[-1, 0].max() < -15  # the last of the spread segments lies in the silence
    assert b[-1, 0].max() > -10  # cropping keeps only the noisy first 2 s


def test_windows_cover_a_long_recording():
    fe = asczoo.create_frontend(**TINY)
    x = noise(7.0, 8000, seed=4)  # 7 s, clips of 2 s: windows at 0, 2, 4 and 5 s
    w = fe.windows(x, 8000)
    assert w.shape == (4, 4, 3, 32, 24)
    assert fe.window_starts(x.shape[-1], 8000) == [0.0, 2.0, 4.0, 5.0]
    torch.testing.assert_close(w[1], fe(x[:, 16000:32000], 8000))
    torch.testing.assert_close(w[3], fe(x[:, -16000:], 8000))
    assert fe.windows(x, 8000, hop_seconds=1.0).shape[0] == 6
    assert fe.windows(noise(1.0, 8000), 8000).shape[0] == 1  # shorter than a clip: one padded window


def test_batch_equals_per_clip_calls():
    fe = asczoo.create_frontend(**TINY)
    clips = torch.stack([noise(2.0, 8000, seed=s) for s in range(3)])
    batched = fe.batch(clips, 8000)
    assert batched.shape == (3, 4, 3, 32, 24)
    for i in range(3):
        torch.testing.assert_close(batched[i], fe(clips[i], 8000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_runs_on_the_gpu():
    fe = asczoo.create_frontend(**TINY)
    clips = torch.stack([noise(2.0, 8000, seed=s) for s in range(2)])
    on_gpu = fe.batch(clips.cuda(), 8000)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), fe.batch(clips, 8000), atol=1e-3, rtol=1e-4)


def test_bad_inputs_and_configs_are_refused_clearly():
    fe = asczoo.create_frontend(**TINY)
    with pytest.raises(ValueError, match="3 channels"):
        fe(torch.zeros(3, 16000), 8000)
    with pytest.raises(ValueError, match="shape"):
        fe(torch.zeros(1, 2, 16000), 8000)
    with pytest.raises(ValueError, match="segment_frames"):
        asczoo.create_frontend(**{**TINY, "segment_frames": 500})
    with pytest.raises(ValueError, match="f_min/f_max"):
        asczoo.create_frontend(**{**TINY, "f_max": 6000.0})
    with pytest.raises(RecipeError, match="n_mel"):
        asczoo.create_frontend(**{**TINY, "n_mel": 3})
    with pytest.raises(RecipeError, match="hop_length"):
        asczoo.create_frontend(**{**TINY, "hop_length": "128"})
    with pytest.raises(ValueError, match="disagree"):
        asczoo.create_frontend("other", plugin="dcase-logmel")


# -- the authors' pipeline ---------------------------------------------------------------------------

@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_agrees_with_librosa_at_the_paper_settings(pad_mode):
    """librosa's melspectrogram (htk=True, norm=None, fmin=0, fmax=sr/2, power 2), then log(x + 1e-8):
    agreement within 1e-3 in the log domain (observed about 3e-5; float32 FFT round-off)."""
    librosa = pytest.importorskip("librosa")
    fe = asczoo.create_frontend(pad_mode=pad_mode)
    g = torch.Generator().manual_seed(7)
    t = torch.arange(480000) / 48000
    left = 0.05 * torch.randn(480000, generator=g) + 0.3 * torch.sin(2 * math.pi * 440 * t)
    right = 0.05 * torch.randn(480000, generator=g) + 0.2 * torch.sin(2 * math.pi * 3000 * t)
    x = torch.stack([left, right]).float()
    ours = fe(x, 48000).numpy()
    for c, signal in enumerate([x[0], x[1], x[0] - x[1]]):
        mel = librosa.feature.melspectrogram(
            y=signal.numpy(), sr=48000, n_fft=2048, hop_length=1024, n_mels=128, htk=True, norm=None,
            fmin=0, fmax=24000, power=2.0, center=True, pad_mode=pad_mode,
        )
        reference = np.log(mel + 1e-8)
        assert reference.shape == (128, 469)
        for s, start in enumerate(range(0, 386, 55)):
            np.testing.assert_allclose(ours[s, c], reference[:, start : start + 80], atol=1e-3, rtol=0)
