"""``asczoo finetune MODEL --data ROOT``: a trained parent, a new head for a folder's classes, a normal run."""

from __future__ import annotations

import json

import pytest
import torch
from data_fixtures import one_thread, write_clip  # noqa: F401 - fixture
from model_fixtures import seed_hub_cache, tiny_model

import asczoo
from asczoo.cli import main

#: the folder's classes: not the parent's ten scenes, and fewer
CLASSES = ("birdsong", "rain", "traffic")
QUIET = ["engine.threads=1", "engine.num_workers=0", "engine.progress=false", "stages.finetune.epochs=2",
         "stages.finetune.batch_size=4"]


@pytest.fixture
def parent(tmp_path):
    """A tiny trained-looking ATReSN-Net (random relation weights and statistics), saved as a folder."""
    model = tiny_model("atresn-net-resnet18", seed=3)
    with torch.no_grad():
        for p in model.relations.parameters():  # a fresh block's output scale is 0: make them count
            p.add_(0.1)
    return model, model.save_pretrained(tmp_path / "parent")


@pytest.fixture
def own_data(tmp_path):
    """Class sub-folders of 2-second clips at 8 kHz, 6 per class, two recording places each."""
    root = tmp_path / "mydata"
    for c, label in enumerate(CLASSES):
        for i in range(6):
            write_clip(root / label / f"{label}-place{i % 2}-{i}.wav", seed=10 * c + i, seconds=2.0, rate=8000,
                       tone=300.0 + 400 * c)
    return root


class Capture:
    """The model as the stage starts: initialised from the parent, before the first step."""

    def on_stage_start(self, stage, model, directory):
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        self.classes = list(model.classes)


def test_finetune_gives_a_new_head_and_keeps_the_parent(parent, own_data, tmp_path, one_thread):
    model, folder = parent
    capture = Capture()
    result = asczoo.finetune(folder, data=own_data, out=tmp_path / "run", overrides=QUIET, callbacks=[capture])
    start = capture.state
    assert capture.classes == list(CLASSES)
    own = model.state_dict()
    for key, value in own.items():  # backbone, relation blocks and normalisation come from the parent
        if not key.startswith("head."):
            torch.testing.assert_close(start[key], value, rtol=0, atol=0, msg=key)
    assert start["head.fc.weight"].shape[0] == len(CLASSES) != own["head.fc.weight"].shape[0]

    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["classes"] == list(CLASSES)
    assert config["frontend"] == model.frontend_config  # the parent's frontend, not the folder's defaults
    assert config["training"]["recipe"] == "finetune"
    assert config["training"]["init_from"] == str(folder.resolve())
    assert "Fine-tuned from" in (result.model_dir / "README.md").read_text()
    for name in ("report.md", "report.json", "recipe.yaml"):
        assert (result.run_dir / name).is_file(), name
    trained = asczoo.from_pretrained(result.model_dir)
    label, probabilities = trained.predict(own_data / "rain" / "rain-place0-0.wav")
    assert label in CLASSES and set(probabilities) == set(CLASSES)

    # resume: the finished stage is not trained again, and the result is the same
    again = asczoo.finetune(folder, data=own_data, out=tmp_path / "run", overrides=QUIET, resume=True)
    assert again.accuracy == result.accuracy


def test_finetune_from_the_hub_cache_names_the_parent_in_the_model_card(parent, own_data, tmp_path, hf_cache,
                                                                       one_thread):
    from huggingface_hub import ModelCard

    model, folder = parent
    seed_hub_cache(hf_cache, "someone/tiny-atresn", folder, "a" * 40)
    result = asczoo.finetune("someone/tiny-atresn", data=own_data, out=tmp_path / "run", overrides=QUIET)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["init_from"] == "hf-hub:someone/tiny-atresn"
    card = ModelCard.load(result.model_dir / "README.md")
    assert card.data.base_model == "someone/tiny-atresn"
    trained = asczoo.from_pretrained(result.model_dir)
    backbone = {k: v for k, v in trained.state_dict().items() if k.startswith("backbone.")}
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())  # it was trained


def test_finetune_cli_show_and_set(parent, own_data, tmp_path, capsys):
    _, folder = parent
    argv = ["finetune", str(folder), "--data", str(own_data), "--set", "stages.finetune.optimizer.lr=0.003", "--show"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "lr: 0.003" in shown and "model: atresn-net-resnet18" in shown and str(folder.resolve()) in shown


def test_finetune_refuses_what_it_cannot_start_from(parent, own_data, tmp_path, capsys):
    _, folder = parent
    assert main(["finetune", "atresn-net-resnet18", "--data", str(own_data)]) == 2
    assert "is a registry name, not a trained model" in capsys.readouterr().err
    assert main(["quantize", str(folder), "--to", "fp16", "--no-parity", "--out", str(tmp_path / "fp16")]) == 0
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "fp16"), "--data", str(own_data)]) == 2
    assert "fine-tune the float model it was quantised from" in capsys.readouterr().err


def test_init_from_copies_relation_blocks_and_keeps_a_head_only_for_the_same_classes(parent):
    model, folder = parent
    same = asczoo.create_model("atresn-net-resnet18", overrides={**_tiny(), "classes": list(model.classes)})
    from asczoo.models.build import initialise_from

    initialise_from(same, folder)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value, rtol=0, atol=0, msg=key)
    renamed = asczoo.create_model("atresn-net-resnet18", overrides={
        **_tiny(), "classes": [f"other{i}" for i in range(10)]})
    fresh_head = renamed.head.fc.weight.clone()
    initialise_from(renamed, folder)
    assert torch.equal(renamed.head.fc.weight, fresh_head)  # ten classes, other names: a new head
    plain = asczoo.create_model("resnet18-3d", overrides=_tiny())
    with pytest.raises(ValueError, match="has relation blocks and 'resnet18-3d' has none"):
        initialise_from(plain, folder)


def _tiny():
    from asczoo.testing import tiny_overrides

    return tiny_overrides()
