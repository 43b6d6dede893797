"""Inference on files: any sample rate and channel count, sliding windows, DCASE output, bad files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from asczoo import dsp
from data_fixtures import one_thread, write_clip  # noqa: F401 - one_thread is a fixture

import asczoo
from asczoo.data.audio import read_audio
from asczoo.cli import main
from asczoo.inference import Prediction, collect_audio_files, predict_files
from model_fixtures import CLASSES, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: the tiny frontend's clip: 2 s at 8 kHz
CLIP = 16000


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ATReSN model saved as a folder (relation blocks active), and the folder."""
    folder = tmp_path_factory.mktemp("model")
    model = tiny_model(seed=3)
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """``audio/`` with 44.1 kHz mono, 48 kHz stereo, a 35-second 22.05 kHz stereo file and a corrupt one."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "audio"
    write_clip(folder / "a_mono_44k.wav", 1, seconds=2.0, rate=44100, channels=1, tone=300.0)
    write_clip(folder / "b_stereo_48k.wav", 2, seconds=2.0, rate=48000, channels=2, tone=900.0)
    write_clip(folder / "c_long_35s.wav", 3, seconds=35.0, rate=22050, channels=2, tone=600.0)
    (folder / "d_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk, not audio at all")
    return folder


def manual_probabilities(model, waveform: torch.Tensor, rate: int) -> torch.Tensor:
    """Probabilities of one clip computed step by step: the model's frontend, the model, softmax."""
    frontend = asczoo.create_frontend(**model.frontend_config)
    with torch.no_grad():
        return torch.softmax(model.eval()(frontend(waveform, rate).unsqueeze(0)), dim=-1)[0]


def test_predict_file_and_waveform(saved, audio):
    model, _ = saved
    for name, rate, channels in (("a_mono_44k.wav", 44100, 1), ("b_stereo_48k.wav", 48000, 2)):
        waveform, file_rate = read_audio(audio / name)
        assert (file_rate, waveform.shape[0]) == (rate, channels)
        label, probabilities = model.predict(audio / name)
        expected = manual_probabilities(model, waveform, rate)
        assert list(probabilities) == CLASSES
        assert torch.allclose(torch.tensor(list(probabilities.values())), expected, atol=1e-6)
        assert label == CLASSES[int(expected.argmax())]
        assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)
        # the same recording as a tensor or a NumPy array with its sample rate
        for data in (waveform, waveform.numpy()):
            again = model.predict(data, sample_rate=rate)
            assert isinstance(again, Prediction) and again.label == label
            assert np.allclose(list(again.probabilities.values()), list(probabilities.values()), atol=1e-6)
    with pytest.raises(ValueError, match="pass the waveform's sample_rate"):
        model.predict(waveform)


def test_long_recording_is_windowed_and_averaged(saved, audio):
    model, _ = saved
    path = audio / "c_long_35s.wav"
    waveform, rate = read_audio(path)
    assert waveform.shape[-1] == 35 * rate
    # independent reference: resample, cut 2-second windows every 2 s plus one ending at the end
    x = dsp.resample(waveform, rate, 8000)
    starts = list(range(0, x.shape[-1] - CLIP + 1, CLIP))
    starts.append(x.shape[-1] - CLIP)
    assert len(starts) == 18
    expected = torch.stack([manual_probabilities(model, x[:, s:s + CLIP], 8000) for s in starts]).mean(0)

    label, probabilities = model.predict(path)
    assert torch.allclose(torch.tensor(list(probabilities.values())), expected, atol=1e-5)
    assert label == CLASSES[int(expected.argmax())]
    (result,) = predict_files(model, collect_audio_files([path]), batch_size=5, progress=False)
    assert result.windows == 18 and result.prediction.label == label


def test_cli_writes_submission_and_scores_and_skips_bad_files(saved, audio, tmp_path, capsys):
    model, folder = saved
    out = tmp_path / "submission.tsv"
    code = main(["predict", str(folder), str(audio), "--output", str(out), "--batch-size", "4",
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "skipped audio/d_corrupt.wav: unreadable audio (" in err
    assert "3 file(s) classified" in err and "1 file(s) skipped" in err

    names = ["audio/a_mono_44k.wav", "audio/b_stereo_48k.wav", "audio/c_long_35s.wav"]
    expected = {n: model.predict(audio / n.split("/")[1]) for n in names}
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["filename", "scene_label"]
    assert rows[1:] == [[n, expected[n].label] for n in names]

    scores = [line.split("\t") for line in (tmp_path / "submission.scores.tsv").read_text().splitlines()]
    assert scores[0] == ["filename", "scene_label", *CLASSES]
    for row in scores[1:]:
        values = [float(v) for v in row[2:]]
        assert row[1] == CLASSES[int(np.argmax(values))] == expected[row[0]].label
        assert np.allclose(values, list(expected[row[0]].probabilities.values()), atol=1e-5)
        assert math.isclose(sum(values), 1.0, abs_tol=1e-5)
    assert [r[0] for r in scores[1:]] == names


def test_cli_files_to_stdout_and_unusable_inputs(saved, audio, tmp_path, capsys):
    _, folder = saved
    three = tmp_path / "three_channels.wav"
    write_clip(three, 4, seconds=1.0, rate=8000, channels=3)
    missing = tmp_path / "missing.wav"
    code = main(["predict", str(folder), str(audio / "b_stereo_48k.wav"), str(three), str(missing), "-q",
                 "--scores", str(tmp_path / "s.tsv")])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.out.splitlines()
    assert lines[0] == "filename\tscene_label" and len(lines) == 2
    assert lines[1].startswith(f"{(audio / 'b_stereo_48k.wav').as_posix()}\t")
    assert f"skipped {three.as_posix()}: expected mono or stereo audio, got 3 channels" in captured.err
    assert f"skipped {missing.as_posix()}: file not found" in captured.err
    assert len((tmp_path / "s.tsv").read_text().splitlines()) == 2

    # a registry model without published weights would predict at random: refused
    assert main(["predict", "resnet18-3d", str(audio / "a_mono_44k.wav")]) == 2
    assert "has no published weights" in capsys.readouterr().err


def test_names_that_are_not_utf8_special_files_and_tabs(saved, audio, tmp_path, capsys):
    """Issue 14 items 3, 7 and 8: a valid WAV with a non-UTF-8 name is classified (its TSV row holds the
    name's bytes); a FIFO is never opened (no hang); a name with a tab is refused, not written."""
    import os
    import shutil

    _, folder = saved
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")
    shutil.copy(audio / "b_stereo_48k.wav", odd)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    tabbed = tmp_path / "a\tb.wav"
    shutil.copy(audio / "b_stereo_48k.wav", tabbed)
    out = tmp_path / "sub.tsv"
    code = main(["predict", str(folder), odd, str(fifo), str(tabbed), "-q", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    rows = out.read_bytes().splitlines()
    assert len(rows) == 2 and rows[1].split(b"\t")[0] == os.fsencode(odd)
    assert "is a FIFO (named pipe), not a regular audio file" in err and "holds a tab" in err and "utf-8" not in err
    assert "2 file(s) skipped" in err


def test_a_zero_hop_is_refused_as_an_argument(saved, audio, capsys):
    """Issue 14 item 8: `--hop 0` names the argument instead of reporting unreadable files."""
    _, folder = saved
    assert main(["predict", str(folder), str(audio / "a_mono_44k.wav"), "--hop", "0", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--hop" in err and "positive" in err and "unreadable" not in err


def test_block_path_equals_whole_file_path(saved, audio, capsys):
    """Issue 23 item 2: a file read and resampled block by block (blocks of 4096 frames: 189 of them,
    none aligned with a window) gives the windows and probabilities of the whole-file path
    (``frontend.windows`` on the file read whole), overlapping hop and last window included."""
    from asczoo.inference import clip_windows, model_frontend, stream_windows, window_probabilities
    from asczoo.data.audio import AudioStream

    model, _ = saved
    path = audio / "c_long_35s.wav"
    frontend = model_frontend(model)
    whole = clip_windows(frontend, *read_audio(path), hop_seconds=1.5)
    with AudioStream(path) as stream:
        chunks = list(stream_windows(stream.blocks(4096), stream.sample_rate, frontend, hop_seconds=1.5, chunk=5))
    streamed = torch.cat([frontend.batch(c.waveforms, c.sample_rate) for c in chunks])
    assert streamed.shape == whole.shape and whole.shape[0] == 23
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)
    starts = [s for c in chunks for s in c.starts]
    assert starts[:3] == [0.0, 1.5, 3.0] and starts[-1] == pytest.approx(33.0)  # the last window ends at 35 s
    (result,) = predict_files(model, collect_audio_files([path]), batch_size=4, hop_seconds=1.5, progress=True,
                              block_frames=4096)
    bar = capsys.readouterr().err  # the bar counts the recording's seconds
    assert "35/35 s of audio" in bar and "file 1/1" in bar
    expected = window_probabilities(model, whole)
    torch.testing.assert_close(result.window_probabilities, expected, rtol=0, atol=1e-5)
    assert result.starts == starts and result.ends[-1] == pytest.approx(35.0)


def test_timeline_api_cli_csv_smoothing_and_plot(saved, audio, tmp_path, capsys):
    """Issue 23 item 1: one row per window (times, top label, every probability), the CLI's CSV holds the
    same rows, --smooth is a centred median over odd N windows, --timeline-plot draws a PNG."""
    import csv

    from asczoo.inference import clip_windows, median_smooth, model_frontend, window_probabilities

    model, folder = saved
    path = audio / "c_long_35s.wav"
    expected = window_probabilities(model, clip_windows(model_frontend(model), *read_audio(path), hop_seconds=3.0))
    rows = model.timeline(path, hop_seconds=3.0)
    assert len(rows) == 12 and [(r.start, r.end) for r in rows[:2]] == [(0.0, 2.0), (3.0, 5.0)]
    assert (rows[-1].start, rows[-1].end) == pytest.approx((33.0, 35.0))  # the last window ends at the end
    for row, probs in zip(rows, expected):
        assert row.labels == (CLASSES[int(probs.argmax())],)
        assert list(row.probabilities.values()) == pytest.approx(probs.tolist(), abs=1e-5)
    # the same rows for the waveform, and predict() is their mean
    again = model.timeline(*read_audio(path), hop_seconds=3.0)
    assert [r.labels for r in again] == [r.labels for r in rows]
    mean = model.predict(path, hop_seconds=3.0).probabilities
    assert list(mean.values()) == pytest.approx(expected.mean(0).tolist(), abs=1e-5)

    smoothed = median_smooth(expected, 3)
    assert torch.equal(smoothed[5], expected[4:7].median(dim=0).values)
    assert torch.equal(smoothed[0], torch.stack([expected[0], expected[0], expected[1]]).median(dim=0).values)
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    args = ["predict", str(folder), str(path), "--hop", "3", "-q", "--timeline", str(out), "--smooth", "3"]
    plotting = pytest.importorskip("matplotlib") is not None
    assert main(args + (["--timeline-plot", str(png)] if plotting else [])) == 0
    table = list(csv.reader(out.open()))
    assert table[0] == ["start", "end", "label", *CLASSES] and len(table) == 13
    assert table[6][:2] == ["15.000", "17.000"] and table[-1][:2] == ["33.000", "35.000"]
    values = torch.tensor([[float(v) for v in r[3:]] for r in table[1:]])
    torch.testing.assert_close(values, smoothed, rtol=0, atol=2e-6)
    assert [r[2] for r in table[1:]] == [CLASSES[int(i)] for i in smoothed.argmax(1)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(args[:-1] + ["4"]) == 2
    assert "--smooth) must be an odd number of windows (1, 3, 5, ...)" in capsys.readouterr().err
    assert main(["predict", str(folder), str(audio), "--timeline", str(out), "-q"]) == 2
    assert "follow one recording; PATH gave 4 files" in capsys.readouterr().err


def test_timeline_of_a_multi_label_model_lists_every_label_above_threshold(tmp_path):
    from asczoo.inference import timeline_rows

    torch.manual_seed(0)
    from asczoo.testing import TINY_OVERRIDES

    model = asczoo.create_model("atresn-net-resnet18", overrides={**TINY_OVERRIDES,
                                                                  "classes": ["a", "b", "c"], "num_classes": 3,
                                                                  "task": "multi-label"})
    waveform = torch.randn(2, 3 * CLIP) * 0.1
    rows = model.eval().timeline(waveform, 8000, threshold=0.3)
    assert len(rows) == 3
    for row in rows:
        assert all(0 <= p <= 1 for p in row.probabilities.values())  # sigmoids, not a softmax
        assert row.labels == tuple(sorted((c for c, p in row.probabilities.items() if p >= 0.3),
                                          key=lambda c: -row.probabilities[c]))
    fixed = timeline_rows(["a", "b", "c"], [0.0], [2.0], torch.tensor([[0.9, 0.2, 0.6]]), threshold=0.5)
    assert fixed[0].labels == ("a", "c")
    from asczoo.inference import write_timeline

    write_timeline(fixed, ["a", "b", "c"], tmp_path / "m.csv", multi_label=True)
    assert (tmp_path / "m.csv").read_text().splitlines() == ["start,end,labels,a,b,c",
                                                            '0.000,2.000,"a,c",0.900000,0.200000,0.600000']
