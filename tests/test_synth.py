"""Synthetic datasets: layout, determinism, format, and what each task puts in its clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import asczoo
from asczoo.cli import main as cli
from asczoo.synth import SCENE_CLASSES, relational_segments, synthesize
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
sf = pytest.importorskip("soundfile")

FRONTEND_16K = {"plugin": "dcase-logmel", "sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 32,
                "segments": 4, "segment_frames": 16, "clip_seconds": 1.0}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    info = synthesize(root, clips=40, seed=3, seconds=1.0, sample_rate=16000, classes=4, progress=False)
    return root, info


def test_scenes_layout_loads_through_the_dcase_plugin(scenes):
    root, info = scenes
    assert info.classes == list(SCENE_CLASSES[:4]) and info.clips == 40
    assert info.train + info.evaluate == 40 and info.evaluate > 0
    header = (root / "meta.csv").read_text().splitlines()[0]
    assert header == "filename\tscene_label\tidentifier\tsource_label"
    for part in ("train", "evaluate", "test"):
        assert (root / "evaluation_setup" / f"fold1_{part}.csv").is_file()
    train = asczoo.create_dataset("dcase2019-task1a", root, frontend=FRONTEND_16K)
    evaluate = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", frontend=FRONTEND_16K)
    assert train.classes == sorted(info.classes)
    assert len(train) == info.train and len(evaluate) == info.evaluate
    assert not set(train.identifiers) & set(evaluate.identifiers)  # locations never cross the split
    assert set(train.labels) == set(evaluate.labels) == set(range(4))  # every class on both sides
    assert train[0][0].shape == (4, 3, 32, 16)


def test_scenes_are_learnable_from_simple_statistics(scenes):
    """A nearest-centroid rule on mean log-mel spectra beats chance on unseen locations by far."""
    root, _ = scenes
    train = asczoo.create_dataset("dcase2019-task1a", root, frontend=FRONTEND_16K)
    evaluate = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", frontend=FRONTEND_16K)

    def summary(ds):
        return torch.stack([ds[i][0].mean(dim=(0, 3)).flatten() for i in range(len(ds))]), torch.tensor(ds.labels)

    x_train, y_train = summary(train)
    x_eval, y_eval = summary(evaluate)
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(4)])
    accuracy = (torch.cdist(x_eval, centroids).argmin(1) == y_eval).float().mean().item()
    assert accuracy >= 0.5  # chance is 0.25


def test_deterministic_by_seed(tmp_path):
    kw = dict(clips=6, seconds=0.5, sample_rate=8000, classes=3, progress=False)
    synthesize(tmp_path / "a", seed=1, **kw)
    synthesize(tmp_path / "b", seed=1, workers=2, **kw)
    synthesize(tmp_path / "c", seed=2, **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 + 5  # clips, meta.csv, three fold files, synth.json
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    wavs = [f for f in files if f.suffix == ".wav"]
    assert all((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in wavs)


def test_default_format_is_48k_stereo_int16_ten_seconds(tmp_path):
    synthesize(tmp_path, clips=4, classes=2, seed=0, progress=False)
    wavs = sorted((tmp_path / "audio").glob("*.wav"))
    assert len(wavs) == 4
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (48000, 2, "PCM_16", 480000)
    data, _ = sf.read(str(wavs[0]))
    assert 0.2 < np.abs(data).max() < 0.75  # peak between -12 and -3 dBFS, never clipped


def test_relational_clips_hold_two_events_in_non_overlapping_segments(tmp_path):
    rate, seconds = 16000, 10.0
    info = synthesize(tmp_path, clips=24, seed=5, task="relational", seconds=seconds, sample_rate=rate,
                      progress=False)
    assert info.classes == ["different", "same"]
    ds = asczoo.create_dataset("dcase2019-task1a", tmp_path, split="all", frontend=FRONTEND_16K)
    spans, gap = relational_segments(seconds, rate)
    assert gap == 2 and len(spans) == 8
    frontend = asczoo.create_frontend(**FRONTEND_16K)
    hop = FRONTEND_16K["hop_length"]
    similarity = {"same": [], "different": []}
    for clip, label in zip(ds.clips, ds.labels):
        audio, _ = sf.read(clip.path, dtype="float32")
        energy = np.array([np.sum(audio[lo:hi] ** 2) / (hi - lo) for lo, hi in spans])
        loud = np.flatnonzero(energy > 1.5 * np.median(energy))
        assert len(loud) == 2  # exactly two segments hold an event
        assert loud[1] - loud[0] >= gap  # and they share no frame
        # what each event adds to the mel power spectrum of its segment, compared by cosine similarity
        power = frontend.logmel(torch.from_numpy(audio.T.copy())[None])[0, 0].exp()  # (mels, frames)
        bed = power.median(dim=1).values
        added = [(power[:, spans[s][0] // hop: spans[s][1] // hop].mean(dim=1) - bed).clamp_min(0) for s in loud]
        similarity[ds.classes[label]].append(float(torch.nn.functional.cosine_similarity(*added, dim=0)))
    assert len(similarity["same"]) == len(similarity["different"]) == 12
    assert min(similarity["same"]) > 0.8
    assert np.mean(similarity["same"]) > np.mean(similarity["different"]) + 0.3


def test_refuses_a_foreign_directory_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize(tmp_path, clips=4, classes=2, progress=False)
    assert cli(["synth", str(tmp_path), "--clips", "4", "--classes", "2", "--no-progress"]) == 2
    with pytest.raises(ValueError, match="too few"):
        synthesize(tmp_path / "x", clips=3, classes=2, progress=False)
    with pytest.raises(ValueError, match="task"):
        synthesize(tmp_path / "x", task="music", progress=False)
    with pytest.raises(ValueError, match="between 2 and 10"):
        synthesize(tmp_path / "x", classes=11, progress=False)


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["synth", str(out), "--clips", "8", "--classes", "2", "--seconds", "0.5", "--sample-rate", "8000",
                "--seed", "4", "--no-progress"]) == 0
    assert "8 scenes clips" in capsys.readouterr().out
    assert len(list((out / "audio").glob("*.wav"))) == 8
    marker = json.loads((out / "synth.json").read_text())
    assert (marker["clips"], marker["classes"], marker["seed"]) == (8, 2, 4)
    assert marker["class_names"] == ["airport", "bus"]
    # a smaller rerun into the same directory replaces it, leaving no stale clips behind
    assert cli(["synth", str(out), "--clips", "4", "--classes", "2", "--seconds", "0.5", "--sample-rate", "8000",
                "--no-progress"]) == 0
    assert len(list((out / "audio").glob("*.wav"))) == 4


def test_a_rerun_never_deletes_or_rewrites_files_it_did_not_write(tmp_path):
    """Issue 14 item 1: a user's own recordings in an earlier synthetic dataset's folder survive."""
    root = tmp_path / "data"
    synthesize(root, clips=8, classes=2, seconds=0.25, sample_rate=8000, progress=False)
    manifest = json.loads((root / "synth.json").read_text())
    assert manifest["complete"] and "meta.csv" in manifest["files"] and len(manifest["files"]) == 8 + 4
    mine = root / "audio" / "my-recording.wav"
    mine.write_bytes(b"RIFF my own data")
    meta = (root / "meta.csv").read_text()
    with pytest.raises(FileExistsError, match="audio/my-recording.wav"):
        synthesize(root, clips=4, classes=2, seconds=0.25, sample_rate=8000, progress=False)
    assert mine.read_bytes() == b"RIFF my own data" and (root / "meta.csv").read_text() == meta
    # told to, it writes into the folder, removing only the clips its manifest lists
    synthesize(root, clips=4, classes=2, seconds=0.25, sample_rate=8000, progress=False, overwrite=True)
    assert mine.read_bytes() == b"RIFF my own data"
    assert len(list((root / "audio").glob("*.wav"))) == 4 + 1


def test_training_does_not_resynthesise_over_a_users_files(tmp_path):
    """`asczoo train quickstart --data DIR` with another data.synth than DIR/synth.json refuses, no prompt."""
    from asczoo.training import _synthesize

    class Runtime:
        is_main, progress, num_workers = True, False, 0

    root = tmp_path / "data"
    synthesize(root, clips=8, classes=2, seconds=0.25, sample_rate=8000, progress=False)
    (root / "notes.txt").write_text("mine")
    before = sorted(p.name for p in (root / "audio").iterdir())
    with pytest.raises(FileExistsError, match="notes.txt"):
        _synthesize(root, {"clips": 4, "classes": 2, "seconds": 0.25, "sample_rate": 8000}, Runtime(), print)
    assert sorted(p.name for p in (root / "audio").iterdir()) == before
    assert (root / "notes.txt").read_text() == "mine"


def test_quickstart_fresh_removes_only_a_run(tmp_path, capsys):
    """`asczoo quickstart --fresh --out DIR` must not delete a folder that is not an asczoo run."""
    mine = tmp_path / "music"
    mine.mkdir()
    (mine / "song.wav").write_bytes(b"RIFF mine")
    assert cli(["quickstart", "--fresh", "--out", str(mine)]) == 2
    assert "not an asczoo run directory" in capsys.readouterr().err
    assert (mine / "song.wav").read_bytes() == b"RIFF mine"


def test_class_names_with_a_tab_are_refused(tmp_path):
    from asczoo.data_checks import DataError

    root = tmp_path / "data"
    synthesize(root, clips=4, classes=2, seconds=0.25, sample_rate=8000, progress=False)
    with pytest.raises(DataError, match="tab or line break"):
        asczoo.create_dataset("dcase2019-task1a", root, classes=["airport", "a\tb"])
