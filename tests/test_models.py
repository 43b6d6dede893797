"""Every registry model builds, runs forward and backward, and is self-consistent (timm-style).

Parametrised over ``list_models()`` itself, so a model added to the registry is tested for free.
"""

from __future__ import annotations

import pytest
import torch

import asczoo
from asczoo.testing import MODEL_CHECKS, TINY_OVERRIDES, ConformanceError, check_model

MODELS = asczoo.list_models()


def test_registry_lists_the_required_models():
    relation_presets = {
        "atresn-net-resnet18", "atresn-net-resnet18-cos", "atresn-net-preact18", "atresn-net-preact18-cos",
        "tresn-net-resnet18", "tresn-net-preact18", "senot-net-resnet18", "senot-net-preact18",
        "atresn-net-resnet18-relpos", "atresn-net-resnet18-augpos", "atresn-net-resnet18-authors",
    }
    assert {"resnet18-segments", "preact18-segments", "resnet18-3d", "preact18-3d", *relation_presets} <= set(MODELS)
    assert MODELS == sorted(MODELS)
    assert asczoo.list_models("*-segments") == ["preact18-segments", "resnet18-segments"]
    assert asczoo.list_models("nothing-like-this*") == []


@pytest.mark.parametrize("name", MODELS)
def test_registry_model_passes_check_model(name):
    """timm-style: forward, backward, config round trip, save and load (asczoo.testing.check_model)."""
    report = check_model(name)
    assert report.passed == list(MODEL_CHECKS)


def test_check_model_catches_a_model_whose_reload_differs(monkeypatch):
    from asczoo.models import model as model_module

    def forgetful_config(self):  # a config that loses the backbone's widths
        config = real_config.fget(self)
        config["recipe"]["backbone"].pop("channels", None)
        return config

    real_config = model_module.AscModel.config
    monkeypatch.setattr(model_module.AscModel, "config", property(forgetful_config))
    with pytest.raises(ConformanceError, match="config: the config's recipe builds a different architecture"):
        check_model("resnet18-segments")


def test_model_carries_its_recipe_and_frontend():
    model = asczoo.create_model("resnet18-segments", overrides=TINY_OVERRIDES)
    config = model.config
    assert config["recipe"]["backbone"]["channels"] == [8, 16, 32, 64]
    assert config["frontend"]["plugin"] == config["recipe"]["frontend"]["plugin"]
    assert tuple(config["input_shape"]) == model.input_shape
    assert len(config["classes"]) == config["num_classes"] == 10


def test_default_input_is_the_dcase_shape():
    model = asczoo.create_model("resnet18-3d")
    assert model.input_shape == (8, 3, 128, 80)


def test_overrides_change_the_architecture():
    wide = asczoo.create_model("resnet18-3d", overrides={"backbone": {"channels": [16, 32, 64, 128], "stem_width": 16}})
    assert wide.backbone.num_features == 128
    assert wide.backbone.model.conv1.out_channels == 16


def test_num_classes_and_bad_input_shapes():
    model = asczoo.create_model("resnet18-segments", num_classes=3, overrides=TINY_OVERRIDES)
    assert model.head.fc.out_features == 3 and model.classes == ["class_0", "class_1", "class_2"]
    with pytest.raises(ValueError, match="mel bands"):
        model(torch.randn(1, 4, 3, 40, 24))
    with pytest.raises(ValueError, match="expected clip features"):
        model(torch.randn(4, 3, 32, 24))


def test_unknown_model_and_tag_errors():
    with pytest.raises(KeyError, match="no model named 'resnet19-3d'"):
        asczoo.create_model("resnet19-3d")
    with pytest.raises(KeyError, match="no weights tagged 'nope'"):
        asczoo.create_model("resnet18-3d.nope")
    with pytest.raises(ValueError, match="no published weights"):
        asczoo.create_model("resnet18-3d", pretrained=True)


def test_parameter_counts_of_full_size_models():
    # A standard ResNet-18 (64-128-256-512) has about 11.2 M parameters (docs/method.md section 3).
    counts = asczoo.create_model("resnet18-3d").parameter_counts()
    assert 11.1e6 < counts["total"] < 11.3e6
    assert counts["total"] == counts["backbone"] + counts["relations"] + counts["head"] + 0


def test_authors_stem_quadruples_the_points():
    from asczoo.commands.info import stage_shapes

    timm_stem = dict(stage_shapes(asczoo.create_model("resnet18-3d")))
    authors = dict(stage_shapes(asczoo.create_model("resnet18-3d", overrides={"backbone": {"stem": "authors"}})))
    assert timm_stem["res1"] == (8, 64, 32, 20) and timm_stem["res4"] == (8, 512, 4, 3)
    assert authors["res1"] == (8, 64, 64, 40) and authors["res4"] == (8, 512, 8, 5)


def test_segment_mean_head_averages_segment_logits():
    model = asczoo.create_model("resnet18-segments", overrides=TINY_OVERRIDES).eval()
    x = torch.randn(3, *model.input_shape)
    per_segment = model.head.segment_logits(model.forward_features(x))
    assert per_segment.shape == (3, model.input_shape[0], 10)
    torch.testing.assert_close(model(x), per_segment.mean(dim=1))
    # a segment model classifies one segment at a time as well (stage-1 training)
    single = model(x[:, :1])
    assert single.shape == (3, 10)
