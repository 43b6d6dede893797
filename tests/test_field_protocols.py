"""The field's protocols end to end at tiny widths: multi-label training (FSD50K layout), the per-device
report (TAU 2022 Mobile), ``--fold`` and ``asczoo cv`` (ESC-50), and DCASE 2024/2025 output.csv."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
from data_fixtures import one_thread  # noqa: F401 - a fixture

import asczoo
from asczoo import plugins
from asczoo.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": {"channels": [8, 16, 32, 64], "stem_width": 8},
        "frontend": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32, "segments": 4,
                     "segment_frames": 16, "clip_seconds": 1.0}}
ENGINE = {"threads": 1, "num_workers": 0, "progress": False}


def synth(layout: str, root: Path, **options) -> Path:
    plugins.get_part("dataset", layout).factory.synthesize(root, sample_rate=8000, **options)
    return root


def two_stages(dataset: str, *, epochs: int = 2, **data) -> dict:
    return {
        "data": {"dataset": dataset, **data}, "seed": 0, "engine": dict(ENGINE),
        "stages": [
            {"name": "stage1", "model": "resnet18-segments", "overrides": copy.deepcopy(TINY), "unit": "segment",
             "epochs": epochs, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
            {"name": "stage2", "model": "atresn-net-resnet18", "init_from": "stage1",
             "overrides": {**copy.deepcopy(TINY), "relation": {"k": 2}}, "unit": "clip", "epochs": epochs,
             "batch_size": 4, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}},
        ],
    }


@pytest.mark.slow
def test_multi_label_end_to_end_train_evaluate_predict(tmp_path, capsys, monkeypatch):
    from asczoo.training import engine

    calls = {"bce": 0}
    original = engine.binary_cross_entropy

    def bce(*args, **kwargs):
        calls["bce"] += 1
        return original(*args, **kwargs)

    def no_softmax_loss(*args, **kwargs):
        raise AssertionError("a multi-label model was trained with the softmax cross-entropy")

    monkeypatch.setattr(engine, "binary_cross_entropy", bce)
    monkeypatch.setattr(engine, "soft_cross_entropy", no_softmax_loss)
    data = synth("fsd50k", tmp_path / "data", clips=40)
    result = asczoo.train(two_stages("fsd50k"), data=data, out=tmp_path / "run")
    assert calls["bce"] > 0
    final = result.stages["stage2"]
    assert final.metric == "mAP" and 0.0 < final.accuracy <= 1.0 and final.confusion == []
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["task"] == "multi-label" and config["activation"] == "sigmoid"
    card = (result.model_dir / "README.md").read_text()
    assert "sigmoid" in card and f"| mAP | {100 * final.accuracy:.2f} % |" in card
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["mAP"] == pytest.approx(final.accuracy) and len(report["per_class_ap"]) == 6

    evaluation = asczoo.evaluate(result.run_dir)
    assert evaluation.metric == "mAP" and evaluation.accuracy == pytest.approx(final.accuracy, abs=1e-3)
    assert "per-class average precision" in evaluation.format()

    import torch

    from asczoo.data.audio import read_audio
    from asczoo.models.pretrained import from_pretrained
    from asczoo.inference import labels_above

    model = from_pretrained(result.model_dir)
    waveform, rate = read_audio(data / "FSD50K.eval_audio" / "4.wav")
    one = waveform[:, :rate]  # one window: the probabilities are the model's sigmoids, not a softmax
    frontend = asczoo.create_frontend(**model.frontend_config)
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(frontend(one, rate).unsqueeze(0)))[0]
    assert list(model.predict(one, rate).probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-5)

    capsys.readouterr()
    assert main(["predict", str(result.model_dir), str(data / "FSD50K.eval_audio"), "--threshold", "0.3", "-q"]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert len(lines) == 8  # every eval clip
    for name, shown in lines.items():
        above = labels_above(model.predict(data / name), 0.3)
        assert shown == (", ".join(f"{c} {p:.3f}" for c, p in above) or "(no label >= 0.3)")
    folder = str(data / "FSD50K.eval_audio")
    assert main(["predict", str(result.model_dir), folder, "--dcase-output", "o.csv", "-q"]) != 0
    assert "is a multi-label model: use --output and --threshold" in capsys.readouterr().err


@pytest.mark.slow
def test_tau_mobile_training_reports_accuracy_per_device(tmp_path):
    data = synth("tau2022-mobile", tmp_path / "data", clips=180)
    result = asczoo.train(two_stages("tau2022-mobile", epochs=1, options={"subset": 50}), data=data,
                          out=tmp_path / "run")
    devices = result.stages["stage2"].devices
    evaluate = asczoo.create_dataset("tau2022-mobile", data, split="evaluate")
    assert set(devices["per_device"]) == {evaluate.device_of[f] for f in evaluate.files}
    assert sum(row["clips"] for row in devices["per_device"].values()) == len(evaluate)
    seen = [d for d in devices["per_device"] if d not in ("s4", "s5", "s6")]
    assert devices["seen"] == pytest.approx(sum(devices["per_device"][d]["accuracy"] for d in seen) / len(seen))
    markdown = (result.run_dir / "report.md").read_text()
    assert "Accuracy by device" in markdown and "| s5 | unseen |" in markdown
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["metrics"]["unseen_device_accuracy"] == pytest.approx(devices["unseen"])
    assert "accuracy by recording device" in asczoo.evaluate(result.run_dir).format()


@pytest.mark.slow
def test_cv_trains_each_fold_resumably_and_reports_mean_and_std(tmp_path, capsys):
    import statistics

    data = synth("esc50", tmp_path / "data", clips=60, seconds=1.0)
    recipe = tmp_path / "esc.yaml"
    one = two_stages("esc50", epochs=1)
    one["stages"] = one["stages"][:1]
    import yaml

    recipe.write_text(yaml.safe_dump({"version": 1, "recipes": {"esc-tiny": one}}))
    out = tmp_path / "cv"
    assert main(["cv", str(recipe), "--data", str(data), "--out", str(out), "--folds", "1,2,3"]) == 0
    summary = json.loads((out / "cv.json").read_text())
    figures = [summary["folds"][k] for k in ("1", "2", "3")]
    assert summary["mean"] == pytest.approx(statistics.fmean(figures))
    assert summary["std"] == pytest.approx(statistics.stdev(figures))
    for k in (1, 2, 3):
        saved = json.loads((out / f"fold{k}" / "model" / "config.json").read_text())
        assert saved["training"]["fold"] == k
    printed = capsys.readouterr().out
    assert "fold  2" in printed and "std over folds" in printed
    # a second call resumes: finished folds are not trained again
    stamp = (out / "fold1" / "stage1" / "done.json").stat().st_mtime_ns
    assert main(["cv", str(recipe), "--data", str(data), "--out", str(out), "--folds", "1,2,3"]) == 0
    assert (out / "fold1" / "stage1" / "done.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["cv", str(recipe), "--data", str(data), "--out", str(out), "--folds", "7"]) != 0
    assert "fold(s) [7] are not official folds of 'esc50'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_fold_option_and_dcase_output_csv(tmp_path, capsys):
    data = synth("tau2020-mobile", tmp_path / "data", clips=180, seconds=1.0)
    recipe = tmp_path / "tau.yaml"
    one = two_stages("tau2020-mobile", epochs=1)
    one["stages"] = one["stages"][:1]
    import yaml

    recipe.write_text(yaml.safe_dump({"version": 1, "recipes": {"tau-tiny": one}}))
    assert main(["train", str(recipe), "--data", str(data), "--out", str(tmp_path / "run"), "--fold", "1"]) == 0
    capsys.readouterr()
    assert main(["train", str(recipe), "--data", str(data), "--out", str(tmp_path / "run2"), "--fold", "2"]) != 0
    assert "fold 2 does not exist; the development set has fold 1 only" in capsys.readouterr().err
    output = tmp_path / "output.csv"
    assert main(["predict", str(tmp_path / "run" / "model"), str(data / "audio"), "-q", "--dcase-output",
                 str(output)]) == 0
    rows = list(csv.reader(output.open(), delimiter="\t"))
    classes = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
               "street_pedestrian", "street_traffic", "tram"]
    assert rows[0] == ["filename", "scene_label", *classes]
    # names as the DCASE 2025 inference template writes them: as the dataset lists them (audio/...)
    assert len(rows) == 181 and all(row[0].startswith("audio/") for row in rows[1:])
    assert {row[0] for row in rows[1:]} == {f"audio/{p.name}" for p in (data / "audio").glob("*.wav")}
    for row in rows[1:]:
        probabilities = [float(v) for v in row[2:]]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row[1] == classes[probabilities.index(max(probabilities))]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["tau2020-mobile", "tau2022-mobile", "esc50", "urbansound8k", "fsd50k"])
def test_real_size_models_run_on_each_dataset_default_frontend(dataset):
    """ATReSN-Net at full width on each dataset's default segment layout (8 segments of 32 to 80 frames)."""
    import torch

    from asczoo.training.runs import dataset_model_overrides

    overrides = dataset_model_overrides(dataset, "atresn-net-resnet18")
    model = asczoo.create_model("atresn-net-resnet18", overrides=overrides)
    frontend = asczoo.create_frontend(**model.frontend_config)
    rate = model.frontend_config["sample_rate"]
    waveform = torch.randn(1, int(rate * model.frontend_config["clip_seconds"])) * 0.1
    with torch.no_grad():
        logits = model.eval()(frontend(waveform, rate).unsqueeze(0))
    assert logits.shape == (1, model.num_classes) and torch.isfinite(logits).all()
    assert model.config["activation"] == ("sigmoid" if dataset == "fsd50k" else "softmax")


@pytest.mark.slow
def test_saved_model_carries_the_dataset_frontend_defaults(tmp_path):
    """No frontend override: the model is built on the dataset's frontend (TAU 2022: 44.1 kHz, 1 s, 8 x 32
    frames) and saves it in its config, so predict preprocesses as the training did."""
    from asczoo_plugins.tau_mobile import FRONTEND_2022

    root = tmp_path / "data"
    plugins.get_part("dataset", "tau2022-mobile").factory.synthesize(root, clips=180)  # 44.1 kHz, 1 s
    recipe = two_stages("tau2022-mobile", epochs=1)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["overrides"] = {"backbone": TINY["backbone"]}
    result = asczoo.train(recipe, data=root, out=tmp_path / "run")
    config = json.loads((result.model_dir / "config.json").read_text())
    assert {k: config["frontend"][k] for k in FRONTEND_2022} == FRONTEND_2022
    assert config["input_shape"] == [8, 3, 128, 32]
