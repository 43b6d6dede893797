"""One's own recordings: the ``folder`` plugin's frontend follows the clips, one command trains on them."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from data_fixtures import one_thread, write_clip  # noqa: F401 - fixture

from asczoo.cli import main
from asczoo.data import create_frontend, dataset_defaults

SMALL = ["--set", "stages.*.overrides.backbone.channels=[8,16,32,64]", "--set", "stages.*.overrides.backbone.stem_width=8",
         "--set", "stages.stage1.epochs=1", "--set", "stages.stage2.epochs=1", "--set", "engine.threads=1",
         "--set", "engine.num_workers=0", "--no-progress"]


@pytest.fixture
def mono_22k(tmp_path):
    """The issue's folder: 3-second 22.05 kHz mono clips in class sub-folders (4 classes x 5 clips)."""
    root = tmp_path / "mydata"
    for c, label in enumerate(("birds", "dog", "rain", "siren")):
        for i in range(5):
            write_clip(root / label / f"{label}-place{i % 2}-{i}.wav", seed=10 * c + i, seconds=3.0, rate=22050,
                       channels=1, tone=300.0 + 250 * c)
    return root


def test_the_folder_frontend_follows_the_recordings(mono_22k, capsys):
    defaults = dataset_defaults("folder", mono_22k)
    assert defaults["frontend"] == {"plugin": "dcase-logmel", "sample_rate": 22050, "n_fft": 1024, "hop_length": 256,
                                    "n_mels": 64, "segments": 8, "segment_frames": 44, "clip_seconds": 3.0,
                                    "channels": 1}
    assert defaults["channels"] == 1
    fe = create_frontend(**defaults["frontend"])
    assert fe.clip_frames == 259 and fe.output_shape == (8, 3, 64, 44)
    # check-data: before, 59 warnings for 20 such files (stereo, 48 kHz, 10 s expected); now none
    assert main(["check-data", str(mono_22k), "--dataset", "folder", "--strict", "--no-progress"]) == 0
    assert "20 files checked: 0 error(s), 0 warning(s)" in capsys.readouterr().out
    # a clip that does not fit the folder is still warned about, by name
    write_clip(mono_22k / "rain" / "odd-one.wav", seed=99, seconds=3.0, rate=22050, channels=2)
    assert main(["check-data", str(mono_22k), "--dataset", "folder", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rain/odd-one.wav: channels" in out and "1 warning(s)" in out


@pytest.mark.parametrize("seconds, rate, channels, expected", [
    (1.0, 44100, 2, {"sample_rate": 44100, "n_fft": 2048, "hop_length": 256, "n_mels": 128, "segment_frames": 30,
                     "clip_seconds": 1.0}),
    (10.0, 48000, 2, {"sample_rate": 48000, "n_fft": 2048, "hop_length": 1024, "n_mels": 128, "segment_frames": 80,
                      "clip_seconds": 10.0}),  # the paper's own frontend
    (2.0, 16000, 1, {"sample_rate": 16000, "n_fft": 1024, "hop_length": 128, "n_mels": 64, "segment_frames": 43,
                     "clip_seconds": 2.0, "channels": 1}),
])
def test_the_folder_frontend_at_other_rates_and_lengths(tmp_path, seconds, rate, channels, expected):
    for label in ("a", "b"):
        write_clip(tmp_path / label / f"{label}.wav", seed=1, seconds=seconds, rate=rate, channels=channels)
    found = dataset_defaults("folder", tmp_path)["frontend"]
    assert found == {"plugin": "dcase-logmel", "segments": 8, **expected}
    create_frontend(**found)  # a frontend the plugin accepts


def test_a_frontend_for_mono_recordings_mixes_stereo_input_to_mono():
    from asczoo.deploy.waveform_export import LogMelGraph

    config = {"plugin": "dcase-logmel", "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32,
              "segments": 4, "segment_frames": 24, "clip_seconds": 1.0}
    mono, stereo = create_frontend(**config, channels=1), create_frontend(**config)
    assert mono.config["channels"] == 1 and "channels" not in stereo.config  # stereo configs are unchanged
    x = torch.randn(2, 2, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(mono.batch(x, 8000), stereo.batch(x.mean(1, keepdim=True), 8000))
    graph = LogMelGraph(mono.config, channels=2)  # the waveform export computes what the frontend does
    torch.testing.assert_close(graph(x), mono.batch(x, 8000), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        create_frontend(**config, channels=3)


def test_train_from_scratch_on_ones_own_folder_in_one_command(mono_22k, tmp_path, one_thread):
    run = tmp_path / "run"
    assert main(["train", "folder-atresn-net", "--data", str(mono_22k), "--out", str(run), *SMALL]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["classes"] == ["birds", "dog", "rain", "siren"]
    assert config["frontend"]["sample_rate"] == 22050 and config["frontend"]["channels"] == 1
    assert config["frontend"]["clip_seconds"] == 3.0
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    for stage in saved["recipe"]["stages"]:  # stages.* reached both stages
        assert stage["overrides"]["backbone"]["channels"] == [8, 16, 32, 64], stage["name"]


def test_set_names_the_keys_that_change_a_model(capsys):
    assert main(["train", "quickstart", "--show", "--set", "model.overrides.backbone.channels=[8,16,32,64]"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) 'model'" in err and "stages.*.overrides.backbone.channels" in err


def test_a_synthesising_recipe_pointed_at_ones_recordings_says_what_trains_on_them(mono_22k, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "quickstart", "--data", str(mono_22k), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "synthesises its data" in err and "asczoo train folder-atresn-net --data" in err
    assert not (run / "recipe.yaml").exists()  # refused before the run was started: no --resume needed next
    assert sorted(p.name for p in mono_22k.iterdir()) == ["birds", "dog", "rain", "siren"]
