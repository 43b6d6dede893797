"""Benchmarks (``python -m benchmarks.NAME``) stay runnable: their shared machinery, their references and
the no-GPU path, at the tiniest sizes. The benchmarks themselves are not run here (see benchmarks/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks import common


def test_result_line_round_trips_and_rejects_spaces():
    line = common.result_line(speedup=2.5, memory_ratio=math.nan, device="H100", batch=16)
    assert line == "RESULT speedup=2.5 memory_ratio=nan device=H100 batch=16"
    assert common.parse_result("table\n" + line + "\n") == {
        "speedup": "2.5", "memory_ratio": "nan", "device": "H100", "batch": "16"}
    with pytest.raises(ValueError):
        common.result_line(device="two words")
    with pytest.raises(ValueError):
        common.parse_result("no result here")


def test_table_and_interleaved_timing():
    text = common.table(["a", "bb"], [[1, "x"], [22, "yyy"]])
    assert text.splitlines()[0] == "|  a |  bb |"
    assert len(text.splitlines()) == 4
    calls = []
    timings = common.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then round-robin
    assert all(len(t.samples) == 3 and t.median >= 0 for t in timings.values())


def test_peak_memory_measures_a_known_allocation_and_enforces_the_budget():
    got = common.peak_memory("benchmarks.common:probe", {"mib": 64}, threads=1)
    assert got["ok"] and 60 * common.MiB <= got["peak"] <= 72 * common.MiB
    capped = common.peak_memory("benchmarks.common:probe", {"mib": 256}, threads=1, limit_bytes=64 * common.MiB)
    assert not capped["ok"] and capped["peak"] is None


def test_dense_reference_computes_the_block_function():
    pytest.importorskip("asczoo_plugins.relation")
    from benchmarks.relation_block import check_equivalence

    assert check_equivalence(16, 2, 3, 3, batch=2, segments=4) < 1e-9


def test_scaling_exponent():
    from benchmarks.scaling import slope

    assert slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    assert slope([1, 2, 4], [5, 10, 20]) == pytest.approx(1.0)


def test_authors_frontend_pipeline_matches_asczoo():
    pytest.importorskip("librosa")
    import asczoo
    from benchmarks.frontend import SR, authors_pipeline, make_clips

    clip = make_clips(1)[0]
    ours = asczoo.create_frontend("dcase-logmel")(torch.from_numpy(clip.T.astype(np.float32)), SR).numpy()
    assert ours.shape == (8, 3, 128, 80)
    assert np.abs(ours - authors_pipeline(clip)).max() < 1e-3


def test_gpu_benchmark_without_cuda_says_not_measured(capsys, monkeypatch):
    from benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    try:
        out = gpu.main([])
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "not measured" in text and out["measured"] is False
    assert common.parse_result(text) == {"clips_per_s": "not_measured", "stage2_minutes": "not_measured"}


def test_gpu_peak_table():
    from benchmarks.gpu import bf16_peak

    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert math.isnan(bf16_peak("Some Future GPU"))


def test_models_benchmark_runs_the_timm_backbones_at_test_size(capsys):
    """The code path only (tiny widths, one repeat's worth): every timm pair is built, stepped and
    divided by its own plain version."""
    from benchmarks.models import main

    got = main(["--quick", "--tiny", "--threads", "1", "--only", "*convnext-atto"])
    assert set(got["train"]) == {"convnext-atto-3d", "atresn-net-convnext-atto"}
    assert "atresn-net-convnext-atto" in capsys.readouterr().out


def test_low_complexity_benchmark_quick(capsys):
    """The low-complexity benchmark in its quick mode: counts within the limits, a RESULT line (the
    timings themselves are not checked: the lead runs the benchmark)."""
    from benchmarks.low_complexity import main

    result = main(["--quick", "--threads", "1"])
    assert all(r["ok"] for r in result["limits"].values())
    values = common.parse_result(capsys.readouterr().out)
    assert float(values["plain_mmacs"]) <= 30 and float(values["relation_int8_kb"]) <= 128
    assert 0 <= float(values["resnet3d_int8_accuracy"]) <= 1


@pytest.mark.slow  # 24 engine runs of two epochs each, 12 of them traced by dynamo
def test_gpu_benchmark_dry_run_on_cpu(capsys, monkeypatch):
    """``--device cpu --quick``: every model at batches 16 and 64, eager and compiled (dynamo with the
    eager backend here), each from a fresh compile state, timed through the engine's own epochs."""
    from benchmarks import gpu

    resets = []
    original = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: (resets.append(1), original())[1])
    threads = torch.get_num_threads()
    try:
        out = gpu.main(["--device", "cpu", "--quick", "--backend", "eager", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert set(out["results"]) == {(m, b, c) for m in gpu.MODELS for b in (16, 64) for c in (False, True)}
    assert len(resets) == len(out["results"])
    for r in out["results"].values():
        assert r["train_s_per_clip"] > 0 and r["eval_s_per_clip"] >= 0
    result = common.parse_result(text)
    assert float(result["stage2_minutes"]) == pytest.approx(out["stage2_minutes"], rel=1e-3)
    assert "evaluation" in text and out["measured"] is False


def test_long_recording_benchmark_writes_its_wav_in_blocks(tmp_path):
    import soundfile as sf

    from benchmarks.long_recording import write_long_wav

    size = write_long_wav(tmp_path / "x.wav", 0.05, block_seconds=1)  # 3 s in 1 s blocks
    info = sf.info(str(tmp_path / "x.wav"))
    assert (info.frames, info.samplerate, info.channels) == (144000, 48000, 2) and size > 4 * 144000


def test_predict_throughput_benchmark_times_predict_and_the_bare_forward(capsys):
    from benchmarks.predict_throughput import main

    out = main(["--quick", "--model", "resnet18-3d", "--clips", "3", "--batch", "2", "--threads", "1"])
    assert 0 < out["predict_ratio"]
    result = common.parse_result(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clips"] == "3" and float(result["predict_clips_per_s"]) > 0


def test_models_benchmark_reports_the_latency_ratio(capsys):
    from benchmarks.models import main

    got = main(["--quick", "--tiny", "--threads", "1", "--only", "atresn-net-resnet18"])
    result = common.parse_result(capsys.readouterr().out.strip().splitlines()[-1])
    assert float(result["latency_ratio"]) == pytest.approx(got["latency_ratio"], rel=1e-3)


@pytest.mark.slow
def test_demo_response_benchmark_times_the_page_and_the_work_behind_it(capsys):
    pytest.importorskip("gradio_client", reason="the demo extra: pip install -e '.[demo]'")
    from benchmarks.demo_response import main

    out = main(["--quick", "--tiny", "--threads", "1", "--seconds", "3"])
    result = common.parse_result(capsys.readouterr().out.strip().splitlines()[-1])
    assert float(result["page_s"]) == pytest.approx(out["page_s"], rel=1e-3)
    assert min(out["page_s"], out["classify_s"], out["predict_s"]) > 0
    assert float(result["page_over_classify"]) == pytest.approx(out["page_s"] / out["classify_s"], rel=1e-3)
