"""The dcase-logmel frontend: shapes, values for known signals, input handling, librosa agreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import asczoo
from asczoo import RecipeError
from asczoo.data import segment_starts

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
    assert fe.config == rebuilt.config
    assert fe.config != asczoo.create_frontend(**{**TINY, "n_mels": 16}).config
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


# -- the CPU path (chunked frames, banded mel, workspaces) against the one-shot torch.stft path ------

def _stft_reference(fe, x: torch.Tensor, rate: int) -> torch.Tensor:
    """What the frontend gives through its batched ``torch.stft`` path (the one other devices take)."""
    prepared = fe._prepare(x.unsqueeze(0) if x.dim() == 2 else x, rate)
    if prepared.shape[-1] > fe.clip_samples and fe.long_clips == "crop":
        prepared = prepared[..., : fe.clip_samples]
    out = fe._batch_stft(prepared)
    return out[0] if x.dim() == 2 else out


CPU_PATH_CASES = {
    "tiny": ({}, 2.0, 2),
    "short clip": ({}, 0.7, 2),
    "long clip, segments spread": ({}, 7.3, 2),
    "long clip, cropped": ({"long_clips": "crop"}, 7.3, 2),
    "mono": ({}, 2.0, 1),
    "odd n_fft": ({"n_fft": 255}, 2.0, 2),
    "hop does not divide n_fft": ({"hop_length": 100}, 2.0, 2),
    "hop longer than n_fft": ({"hop_length": 300, "segment_frames": 10}, 2.0, 2),
    "one segment": ({"segments": 1}, 2.0, 2),
    "disjoint segments": ({"segments": 3, "segment_frames": 10}, 2.0, 2),
    "empty mel bands": ({"n_mels": 128, "f_min": 30.0, "f_max": 3000.0}, 2.0, 2),
    "clip shorter than n_fft": ({"clip_seconds": 0.05, "n_fft": 512, "segments": 2, "segment_frames": 2}, 0.05, 2),
}


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("case", list(CPU_PATH_CASES))
def test_cpu_path_equals_the_stft_path(case, pad_mode):
    options, seconds, channels = CPU_PATH_CASES[case]
    fe = asczoo.create_frontend(**{**TINY, **options, "pad_mode": pad_mode})
    x = noise(seconds, 8000, seed=5, channels=channels)
    ours = fe(x, 8000)
    assert ours.shape == fe.output_shape
    torch.testing.assert_close(ours, _stft_reference(fe, x, 8000), atol=1e-5, rtol=0)
    if channels == 2 and seconds >= 2.0:
        full = fe.logmel(x.unsqueeze(0))
        torch.testing.assert_close(full, fe._logmel_stft(fe._pad(x.unsqueeze(0))), atol=1e-5, rtol=0)


def test_cpu_path_resampled_and_int16_inputs_equal_the_stft_path():
    fe = asczoo.create_frontend(**TINY)
    from_44k = sine(1000.0, 2.0, 44100) + noise(2.0, 44100, seed=6)
    torch.testing.assert_close(fe(from_44k, 44100), _stft_reference(fe, from_44k, 44100), atol=1e-5, rtol=0)
    as_int = (noise(2.0, 8000, seed=7) * 32767).round().to(torch.int16)
    torch.testing.assert_close(fe(as_int, 8000), _stft_reference(fe, as_int, 8000), atol=1e-5, rtol=0)


def test_strided_inputs_are_read_in_place_with_the_same_result():
    fe = asczoo.create_frontend(**TINY)
    x = noise(2.0, 8000, seed=10)
    expected = fe(x, 8000)
    interleaved = x.T.contiguous().T  # (samples, channels) audio transposed: strides (1, 2)
    assert interleaved.stride() == (1, 2)
    wider = torch.zeros(2, 20000)
    wider[:, 100:16100] = x
    offset = wider[:, 100:16100]  # a storage offset and a row stride longer than the clip
    for y in (interleaved, offset, interleaved.double()):
        torch.testing.assert_close(fe(y, 8000), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fe.logmel(interleaved.unsqueeze(0)), fe.logmel(x.unsqueeze(0)), atol=1e-6, rtol=0)


def test_chunks_that_do_not_divide_the_frames_give_the_same_result():
    whole = asczoo.create_frontend(**TINY)
    chunked = asczoo.create_frontend(**TINY)
    chunked.chunk_bytes = 3 * 4 * TINY["n_fft"] * 10  # chunks of 10 frames: 126 frames = 12 x 10 + 6
    clips = torch.stack([noise(2.0, 8000, seed=s) for s in range(2)])
    torch.testing.assert_close(chunked.batch(clips, 8000), whole.batch(clips, 8000), atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked.logmel(clips), whole.logmel(clips), atol=1e-6, rtol=0)
    # 6 s: four disjoint ranges of 24 used frames, so chunks of 10 straddle ranges
    spread = torch.cat([noise(2.0, 8000, seed=3), noise(4.0, 8000, seed=4)], dim=1)
    torch.testing.assert_close(chunked(spread, 8000), whole(spread, 8000), atol=1e-6, rtol=0)


def test_workspace_reuse_across_clip_lengths_and_returned_tensors_are_fresh():
    fe = asczoo.create_frontend(**TINY)
    a, b, c = noise(2.0, 8000, seed=1), noise(3.3, 8000, seed=2), noise(11.0, 8000, seed=3)
    first = fe(a, 8000)
    kept = first.clone()
    full_b = fe.logmel(b.unsqueeze(0))  # more frames than a clip: larger workspaces
    long_c = fe(c, 8000)  # segments spread over 11 s: several disjoint ranges
    again = fe(a, 8000)
    full_b_kept = full_b.clone()
    fe.logmel(a.unsqueeze(0))
    torch.testing.assert_close(full_b, full_b_kept, atol=0, rtol=0)
    torch.testing.assert_close(first, kept, atol=0, rtol=0)  # later calls did not write into it
    torch.testing.assert_close(again, kept, atol=0, rtol=0)
    torch.testing.assert_close(full_b, fe._logmel_stft(b.unsqueeze(0)), atol=1e-5, rtol=0)
    torch.testing.assert_close(long_c, _stft_reference(fe, c, 8000), atol=1e-5, rtol=0)
    fresh = asczoo.create_frontend(**TINY)
    torch.testing.assert_close(fresh.logmel(b.unsqueeze(0)), full_b, atol=0, rtol=0)


def test_threads_and_copies_get_their_own_workspaces():
    import copy
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    fe = asczoo.create_frontend(**TINY)
    clips = [noise(2.0 + 0.3 * s, 8000, seed=s) for s in range(6)]
    expected = [fe(c, 8000) for c in clips]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            results = list(pool.map(lambda c: fe(c, 8000), clips))
            for got, want in zip(results, expected):
                torch.testing.assert_close(got, want, atol=0, rtol=0)
    for other in (pickle.loads(pickle.dumps(fe)), copy.deepcopy(fe)):
        assert other.config == fe.config
        torch.testing.assert_close(other(clips[0], 8000), expected[0], atol=0, rtol=0)


def test_inference_mode_and_normal_calls_mix():
    fe = asczoo.create_frontend(**TINY)
    x = noise(2.0, 8000)
    with torch.inference_mode():
        inside = fe(x, 8000)  # workspaces made here must stay usable outside
    outside = fe(x, 8000)
    with torch.inference_mode():
        inside_again = fe(x, 8000)
    torch.testing.assert_close(inside, outside, atol=0, rtol=0)
    torch.testing.assert_close(inside_again, outside, atol=0, rtol=0)


def test_difference_channel_is_exact_when_the_sides_are_nearly_equal():
    """L - R is formed on the waveform before the FFT. Subtracting the two spectra instead would be
    one FFT fewer but carries rounding relative to the loud sides: about 3e-3 here (log domain)."""
    fe = asczoo.create_frontend(**TINY)
    left = noise(2.0, 8000, seed=8, channels=1)[0]
    right = left + 1e-4 * noise(2.0, 8000, seed=9, channels=1)[0]  # difference 80 dB below the sides
    x = torch.stack([left, right])
    diff = x[0].double() - x[1].double()
    window = torch.hann_window(TINY["n_fft"], dtype=torch.float64)
    spec = torch.stft(diff, TINY["n_fft"], TINY["hop_length"], window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    exact = torch.log(fe._fbank.double() @ spec.abs().square() + 1e-8)  # (M, T), float64
    ours = fe.logmel(x.unsqueeze(0))[0, 2].double()
    assert (ours - exact).abs().max() < 1e-4


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
def test_mel_bands_give_the_dense_product_with_fewer_multiply_adds():
    from asczoo_plugins.dcase_logmel import mel_bands

    configs = [{}, TINY, {**TINY, "n_mels": 128, "f_min": 30.0, "f_max": 3000.0}, {**TINY, "f_min": 500.0}]
    for config in configs:
        fbank = asczoo.create_frontend(**config)._fbank
        bands = mel_bands(fbank)
        assert [a for a, *_ in bands] == [0, *[e for _, e, *_ in bands[:-1]]] and bands[-1][1] == fbank.shape[0]
        power = torch.rand(5, fbank.shape[1], dtype=torch.float64) * 10 ** torch.linspace(-6, 2, fbank.shape[1])
        banded = torch.cat([power[:, f0:f1] @ w.double().T for _, _, f0, f1, w in bands], dim=1)
        torch.testing.assert_close(banded, power @ fbank.double().T, atol=0, rtol=1e-12)
    fbank = asczoo.create_frontend()._fbank
    bands = mel_bands(fbank)
    assert sum((e - a) * (f1 - f0) for a, e, f0, f1, _ in bands) < fbank.numel() / 4  # the point of bands


def test_used_frames_and_chunks():
    from asczoo_plugins.dcase_logmel import _chunks, _used_frames

    assert _used_frames([0, 55, 110], 80) == ([(0, 190)], [0, 55, 110])  # overlapping: one range
    assert _used_frames([0, 100, 200], 80) == ([(0, 80), (100, 180), (200, 280)], [0, 80, 160])
    assert _used_frames([40], 20) == ([(40, 60)], [0])
    assert list(_chunks([(0, 10), (20, 25)], 4)) == [[(0, 4)], [(4, 8)], [(8, 10), (20, 22)], [(22, 25)]]
    assert list(_chunks([(0, 465)], 512)) == [[(0, 465)]]
    assert list(_chunks([(0, 465)], 170)) == [[(0, 155)], [(155, 310)], [(310, 465)]]  # even chunks


def test_logmel_wants_stereo():
    fe = asczoo.create_frontend(**TINY)
    with pytest.raises(ValueError, match="stereo"):
        fe.logmel(torch.zeros(1, 1, 16000))
