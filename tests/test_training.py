"""A tiny two-stage training run on synthetic scenes: every output a user expects, and stage 2 really
starting from stage 1. The helpers here are shared by test_resume.py and test_distributed.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

TINY = {
    "backbone": {"channels": [8, 16, 32, 64], "stem_width": 8},
    "frontend": {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32,
                 "segments": 4, "segment_frames": 24, "clip_seconds": 2.0},
}
CLASSES = 4


def make_data(root: Path) -> Path:
    """40 synthetic 2-second scenes of 4 classes at 8 kHz (24 training, 16 held-out clips)."""
    from asczoo.data.synth import synthesize

    synthesize(root, clips=40, seed=0, task="scenes", seconds=2.0, sample_rate=8000, classes=CLASSES, progress=False)
    return root


def tiny_recipe(*, stage1_epochs: int = 2, stage2_epochs: int = 2, **engine) -> dict:
    """The paper's two-stage recipe in miniature: segments first, then ATReSN-Net from stage 1."""
    return {
        "description": "tiny two-stage recipe for tests",
        "data": {"dataset": "dcase2019-task1a", "fold": 1},
        "seed": 3,
        "engine": {"threads": 1, "num_workers": 0, "progress": False, **engine},
        "stages": [
            {"name": "stage1", "model": "resnet18-segments", "overrides": copy.deepcopy(TINY), "unit": "segment",
             "epochs": stage1_epochs, "batch_size": 16,
             "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True},
             "schedule": {"name": "step", "step_epochs": 1, "gamma": 0.5},
             "augment": [{"plugin": "lr-swap", "per": "batch"}, {"plugin": "mixup", "alpha": 0.4, "p": 0.5}]},
            {"name": "stage2", "model": "atresn-net-resnet18", "init_from": "stage1",
             "overrides": {**copy.deepcopy(TINY), "relation": {"k": 2}}, "unit": "clip",
             "epochs": stage2_epochs, "batch_size": 6,
             "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
             "schedule": {"name": "step", "step_epochs": 1, "gamma": 0.1},
             "augment": [{"plugin": "lr-swap", "per": "batch"}]},
        ],
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("scenes") / "data")


class Snapshot:
    """Callback: the stage-2 model as it is before its first step."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.model = None

    def on_stage_start(self, stage, model, directory):
        if stage["name"] == "stage2":
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.model = copy.deepcopy(model)


def test_two_stage_run_writes_every_output_and_stage2_starts_from_stage1(scenes, tmp_path, capsys, monkeypatch):
    import asczoo
    from safetensors.torch import load_file

    from asczoo.cli import main
    from asczoo.hub import files as hub_files
    from asczoo.models.pretrained import from_pretrained

    saves = []
    real_save = hub_files.save_pretrained
    monkeypatch.setattr(hub_files, "save_pretrained",
                        lambda model, folder, **kw: saves.append(Path(folder)) or real_save(model, folder, **kw))
    run = tmp_path / "run"
    snapshot = Snapshot()
    result = asczoo.train(tiny_recipe(progress=True), data=scenes, out=run, callbacks=[snapshot])
    captured = capsys.readouterr()
    # each stage's kept model is written once (evaluated before, not saved, reloaded and saved again)
    assert saves.count(run / "stage1" / "model") == 1 and saves.count(run / "stage2" / "model") == 1

    # -- stage 2 starts from stage 1: its backbone equals the inflated stage-1 backbone before any step
    stage1 = load_file(str(run / "stage1" / "model" / "model.safetensors"))
    backbone = {k: v for k, v in stage1.items() if k.startswith("backbone.")}
    assert backbone and all(torch.equal(snapshot.state[k], v) for k, v in backbone.items())
    assert torch.equal(snapshot.state["norm_mean"], stage1["norm_mean"])
    fresh = asczoo.create_model("atresn-net-resnet18", overrides={**TINY, "relation": {"k": 2}}, num_classes=CLASSES)
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in backbone.items() if v.is_floating_point())
    # ... and, with zero-initialised relation blocks, computes what the stage-1 model computes
    segment_model = from_pretrained(run / "stage1" / "model")
    x = torch.randn(3, 4, 3, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(snapshot.model.eval()(x), segment_model(x), atol=1e-4, rtol=1e-4)
    stage2_rows = [json.loads(line) for line in (run / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert stage2_rows[0]["epoch"] == 0 and stage2_rows[0]["eval_accuracy"] == result.stages["stage1"].accuracy

    # -- metrics.jsonl: every epoch of both stages
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("stage1", 1), ("stage1", 2), ("stage2", 0), ("stage2", 1),
                                                         ("stage2", 2)]
    for row in rows[:2] + rows[3:]:
        assert {"train_loss", "train_accuracy", "eval_accuracy", "lr", "clips_per_s", "seconds"} <= set(row)
    assert rows[1]["lr"] == pytest.approx(0.025)  # step schedule: x0.5 after epoch 1

    # -- progress bars (forced on here): loss, accuracy, clips/s; one line per epoch with the ETA
    assert "clips/s" in captured.err and "loss" in captured.err and "acc" in captured.err
    assert "stage2 epoch 2/2" in captured.out and "ETA" in captured.out

    # -- TensorBoard when installed, a note when not
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "pip install tensorboard" in captured.out
    else:
        for stage in ("stage1", "stage2"):
            assert list((run / stage / "tensorboard").glob("events.out.tfevents.*"))

    # -- the report: overall and per-class accuracy, confusion matrices as PNG
    report = json.loads((run / "report.json").read_text())
    for stage in ("stage1", "stage2"):
        entry = report["stages"][stage]
        assert entry["accuracy"] == result.stages[stage].accuracy
        assert len(entry["per_class_accuracy"]) == CLASSES
        assert sum(map(sum, entry["confusion_matrix"])) == entry["num_clips"] == 16
        assert (run / stage / "evaluation.json").is_file() and (run / stage / "done.json").is_file()
    markdown = (run / "report.md").read_text()
    assert "Per-class accuracy" in markdown and "atresn-net-resnet18" in markdown and "airport" in markdown
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        for png in (run / "confusion_matrix.png", run / "stage1" / "confusion_matrix.png"):
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # -- the final model: model.safetensors + config.json with recipe, frontend, normalisation, classes
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["name"] == "atresn-net-resnet18" and config["recipe"]["relation"]["k"] == 2
    assert config["frontend"]["n_mels"] == 32 and config["classes"] == ["airport", "bus", "metro", "metro_station"]
    assert torch.tensor(config["normalization"]["mean"]).shape == (3, 32)
    assert config["training"]["recipe"] == "custom" and config["training"]["dataset"] == "dcase2019-task1a"
    assert config["metrics"]["accuracy"] == result.stages["stage2"].accuracy
    final = from_pretrained(run / "model")
    assert final.classes == config["classes"]
    assert report["accuracy"] == config["metrics"]["accuracy"]  # the report's top level: the final model
    card = (run / "model" / "README.md").read_text()
    assert "atresn-net-resnet18" in card and "airport" in card
    assert yaml.safe_load((run / "recipe.yaml").read_text())["recipe"]["stages"][1]["init_from"] == "stage1"

    # -- `asczoo eval RUN_DIR` reproduces the held-out accuracy from the saved model
    assert main(["eval", str(run), "--data", str(scenes)]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {100 * result.stages['stage2'].accuracy:.2f}%" in out
    assert "per-class accuracy" in out and "confusion matrix" in out and "metro_station" in out
    ev = asczoo.evaluate(run, scenes, stage="stage1")
    assert ev.accuracy == result.stages["stage1"].accuracy and ev.confusion == result.stages["stage1"].confusion

    # -- a finished run is not overwritten by accident
    with pytest.raises(FileExistsError, match="--resume"):
        asczoo.train(tiny_recipe(), data=scenes, out=run)


def test_held_in_memory_and_streamed_features_train_identically(scenes, tmp_path):
    """The two data paths (features held on the device, or a DataLoader with workers over the cache)
    give the same batches, so the same weights."""
    from safetensors.torch import load_file

    from asczoo.training.runs import train

    recipe = tiny_recipe(stage1_epochs=1, stage2_epochs=1)
    recipe["stages"] = recipe["stages"][:1]  # with its random augmentations (lr-swap, mixup)
    held = train(recipe, data=scenes, out=tmp_path / "held", overrides=["engine.data_on_device=true"])
    streamed = train(recipe, data=scenes, out=tmp_path / "streamed",
                     overrides=["engine.data_on_device=false", "engine.num_workers=1"])
    a = load_file(str(held.model_dir / "model.safetensors"))
    b = load_file(str(streamed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert held.stages["stage1"].history[0]["train_loss"] == streamed.stages["stage1"].history[0]["train_loss"]


def test_quickstart_command_runs_the_whole_demo_in_miniature(tmp_path, capsys):
    """`asczoo quickstart` (what quickstart.sh runs after installing): synthesise, train both stages,
    evaluate both, predict a held-out clip, print the accuracies; a second call reuses the run."""
    from asczoo.cli import main

    frontend = "{sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 32, segments: 4, segment_frames: 24, clip_seconds: 2.0}"
    tiny = ["data.synth={task: scenes, clips: 40, seed: 0, seconds: 2.0, sample_rate: 8000, classes: 4}",
            "engine.threads=1", "engine.num_workers=0"]
    for stage in (0, 1):
        tiny += [f"stages.{stage}.overrides.frontend={frontend}", f"stages.{stage}.epochs=1",
                 f"stages.{stage}.overrides.backbone={{channels: [8, 16, 32, 64], stem_width: 8}}"]
    tiny += ["stages.1.overrides.relation={k: 2}", "stages.0.batch_size=16", "stages.1.batch_size=6"]
    args = ["quickstart", "--out", str(tmp_path / "qs"), *[x for item in tiny for x in ("--set", item)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "segment baseline (stage 1)" in out and "ATReSN-Net       (stage 2)" in out and "(chance 25%)" in out
    assert "prediction for one held-out clip" in out and "(true: " in out
    assert (tmp_path / "qs" / "model" / "model.safetensors").is_file()
    assert main(args) == 0  # again: nothing is retrained
    assert "finished earlier" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_uses_bf16_channels_last_and_features_on_the_gpu(scenes, tmp_path):
    from asczoo.training.runs import train

    lines: list[str] = []
    recipe = tiny_recipe(stage1_epochs=1, stage2_epochs=1, device="cuda")
    result = train(recipe, data=scenes, out=tmp_path / "run", log=lines.append)
    text = "\n".join(lines)
    assert "cuda" in text and "bf16" in text and "channels_last" in text and "held on cuda" in text
    assert 0.0 <= result.stages["stage2"].accuracy <= 1.0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
