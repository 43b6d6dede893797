"""Issue 24 item 5: the entry points refuse what they cannot serve, in one line that says what was
expected: HEAR's sample rates, ``create_frontend`` given a config dict as the name, ``eval`` on a
data root that is not a folder."""

from __future__ import annotations

import pytest
import torch

import asczoo
from asczoo.testing.tiny import tiny_overrides


@pytest.fixture(scope="module")
def saved_8k(tmp_path_factory):
    """A tiny model whose frontend runs at 8 kHz (a rate HEAR 2021 does not allow)."""
    torch.manual_seed(0)
    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3).eval()
    folder = tmp_path_factory.mktemp("hear") / "model"
    model.save_pretrained(folder)
    return folder, model


def test_hear_refuses_a_sample_rate_it_does_not_allow(saved_8k):
    import asczoo.hear as hear

    folder, model = saved_8k
    assert model.frontend_config["sample_rate"] == 8000
    with pytest.raises(ValueError, match=r"config\.json frontend sample_rate 8000 is not one HEAR 2021 allows "
                                         r"\(16000, 22050, 44100, 48000 Hz\)") as caught:
        hear.load_model(folder, device="cpu")
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="frontend sample_rate 8000 is not one HEAR 2021 allows"):
        hear.HearModel(model)


def test_create_frontend_given_a_config_as_the_name_shows_the_call_that_works(saved_8k):
    _, model = saved_8k
    with pytest.raises(TypeError, match=r"the first argument is the plugin name \(a str\), got a dict with keys "
                                        r"plugin, sample_rate.*create_frontend\(\*\*config\)"):
        asczoo.create_frontend(model.frontend_config)
    assert asczoo.create_frontend(**model.frontend_config).config == model.frontend_config


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_eval_refuses_a_data_root_that_is_not_a_folder(saved_8k, tmp_path, capsys, kind):
    from asczoo.cli import main

    folder, _ = saved_8k
    root = tmp_path / "data"
    if kind == "file":
        root.write_text("not a dataset")
    assert main(["eval", str(folder), "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"asczoo eval: error: evaluate: data root {root} (--data ROOT) is not a directory; expected "
                   "the dataset's folder (pass --data ROOT)")
