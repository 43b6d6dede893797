"""asczoo.dsp against torchaudio, its reference, and asczoo running with no torchaudio at all."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch

from asczoo import dsp

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def taf():
    """torchaudio.functional where torchaudio loads beside this torch; CI's lock sets ASCZOO_REQUIRE_TORCHAUDIO=1."""
    try:
        import torchaudio.functional as functional
    except Exception as error:  # OSError from its native library, ImportError when absent
        if os.environ.get("ASCZOO_REQUIRE_TORCHAUDIO") == "1":
            raise AssertionError(f"torchaudio, the reference of asczoo.dsp, does not load here: {error}")
        pytest.skip(f"torchaudio does not load beside torch {torch.__version__}: {error}")
    return functional


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 16000), (22050, 48000), (8000, 48000),
                                   (48000, 44100), (12345, 48000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resample_equals_torchaudio(taf, rates, dtype):
    x = torch.randn(2, 3, 24000, generator=torch.Generator().manual_seed(0), dtype=dtype)
    ours, theirs = dsp.resample(x, *rates), taf.resample(x, *rates)
    assert ours.shape == theirs.shape and ours.dtype == dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_resample_full_clip_length_and_same_rate():
    x = torch.randn(2, 441000)  # a 10 s 44.1 kHz stereo clip
    assert dsp.resample(x, 44100, 48000).shape == (2, 480000)
    assert dsp.resample(x, 48000, 48000) is x
    with pytest.raises(ValueError, match="positive"):
        dsp.resample(x, 0, 48000)
    with pytest.raises(TypeError, match="floating-point"):
        dsp.resample(torch.ones(2, 10, dtype=torch.int16), 8000, 16000)


@pytest.mark.parametrize("args", [(1025, 0.0, 24000.0, 128, 48000), (257, 50.0, 8000.0, 40, 16000),
                                  (513, 0.0, 11025.0, 64, 22050)])
@pytest.mark.parametrize("norm", [None, "slaney"])
def test_melscale_fbanks_equal_torchaudio(taf, args, norm):
    torch.testing.assert_close(dsp.melscale_fbanks(*args, norm=norm),
                               taf.melscale_fbanks(*args, norm=norm, mel_scale="htk"), rtol=0, atol=1e-7)


def test_fftconvolve_equals_torchaudio(taf):
    x, h = torch.randn(3, 4000), torch.randn(3, 333)
    torch.testing.assert_close(dsp.fftconvolve(x, h), taf.fftconvolve(x, h), rtol=0, atol=1e-4)


def test_no_asczoo_module_imports_torchaudio():
    offenders = [str(p.relative_to(ROOT)) for folder in ("asczoo", "plugins/asczoo_plugins")
                 for p in (ROOT / folder).rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+torchaudio", p.read_text(), re.MULTILINE)]
    assert offenders == []


def test_frontend_and_model_work_when_torchaudio_cannot_load():
    """As beside a torch that no torchaudio release loads with: every plugin loads, the frontend runs."""
    code = (
        "import sys; sys.modules['torchaudio'] = None\n"  # any `import torchaudio` now raises ImportError
        "import torch, asczoo\n"
        "from asczoo import plugins\n"
        "bad = [r.name for r in plugins.plugin_records() if r.status != 'loaded']\n"
        "assert not bad, bad\n"
        "fe = asczoo.create_frontend('dcase-logmel')\n"
        "x = fe.batch(torch.randn(1, 2, 44100 * 2) * 0.1, 44100)\n"
        "assert x.shape == (1, 8, 3, 128, 80), x.shape\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ASCZOO_STRICT_PLUGINS": "1"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("rates", [(44100, 48000), (48000, 8000), (22050, 8000), (12345, 48000), (8000, 8000)])
def test_streaming_resampler_equals_whole_signal(rates):
    """Issue 23: block-by-block resampling (how `asczoo predict` reads hours of audio) gives the samples of
    resampling the whole signal, whatever the block sizes, including blocks shorter than the kernel."""
    x = torch.randn(2, 20011, generator=torch.Generator().manual_seed(1))
    whole = dsp.resample(x, *rates)
    for sizes in ([1, 7, 3000], [4096], [20011], [5000, 1, 1, 2]):
        resampler = dsp.StreamingResampler(*rates)
        pieces, at, sizes_cycle = [], 0, iter(sizes * 20011)
        while at < x.shape[-1]:
            size = next(sizes_cycle)
            pieces.append(resampler.push(x[:, at:at + size]))
            at += size
        pieces.append(resampler.flush())
        torch.testing.assert_close(torch.cat(pieces, dim=-1), whole, rtol=0, atol=1e-6)
