"""registry.yaml and user recipe files: validation errors name the file, the recipe and the key."""

from __future__ import annotations

import textwrap

import pytest
import torch

import asczoo
from asczoo.recipes import model_recipes as recipes
from asczoo.testing import TINY_OVERRIDES


def _write(tmp_path, text, name="my_models.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    version: 1
    models:
      my-resnet:
        extends: resnet18-3d
        description: a user's narrow 3D ResNet
        backbone: {channels: [8, 16, 32, 64], stem_width: 8}
        head: {dropout: 0.1}
"""


def test_user_recipe_file_via_python_call(tmp_path):
    path = _write(tmp_path, GOOD)
    assert asczoo.register_recipes(path) == ["my-resnet"]
    assert "my-resnet" in asczoo.list_models("my-*")
    model = asczoo.create_model("my-resnet")
    assert model.backbone.num_features == 64
    assert model.head.dropout.p == 0.1


def test_user_recipe_file_via_environment(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD)
    monkeypatch.setenv("ASCZOO_REGISTRY", str(path))
    recipes.invalidate()
    assert "my-resnet" in asczoo.list_models()


@pytest.mark.parametrize(
    "section, expected",
    [
        ("backbone: {plugin: no-such-backbone}", r"my_models.yaml: recipe 'bad', section 'backbone': key 'plugin': no backbone named 'no-such-backbone'"),
        ("head: {plugin: avgpool-fc, dropuot: 0.5}", r"recipe 'bad', section 'head': unknown key 'dropuot'; this part accepts: dropout"),
        ("head: {plugin: avgpool-fc, dropout: high}", r"recipe 'bad', section 'head': key 'dropout' has value 'high' of type str; expected number"),
        ("inflator: {plugin: inflate-3d, mode: sideways}", r"section 'inflator': key 'mode' has value 'sideways'.*expected one of 'folded', 'conv3d'"),
        ("backbone: [timm-resnet]", r"section 'backbone': expected a mapping with a 'plugin' key"),
        ("head: {plugin: avgpool-fc, num_classes: 3}", r"key 'num_classes' is set by asczoo itself"),
        ("bakcbone: {plugin: timm-resnet}", r"recipe 'bad': unknown key\(s\) 'bakcbone'"),
        ("num_classes: -2", r"key 'num_classes' must be a positive integer"),
        ("relation: {plugin: avgpool-fc, placement: [res2_1]}", r"section 'relation': key 'plugin': no relation block named 'avgpool-fc'"),
        ("weights: {v1: {repo_id: nobody}}", r"weights tag 'v1': key 'repo_id' must be a Hub repository id"),
    ],
)
def test_invalid_recipes_name_the_file_recipe_and_key(tmp_path, section, expected):
    path = _write(tmp_path, f"""
        models:
          bad:
            extends: resnet18-3d
            {section}
    """)
    with pytest.raises(asczoo.RecipeError, match=expected):
        asczoo.register_recipes(path)
    assert "bad" not in asczoo.list_models()


def test_file_level_errors(tmp_path):
    with pytest.raises(asczoo.RecipeError, match="unknown top-level key"):
        asczoo.register_recipes(_write(tmp_path, "model: {}\n"))
    with pytest.raises(asczoo.RecipeError, match="not valid YAML"):
        asczoo.register_recipes(_write(tmp_path, "models: {a: [\n", name="broken.yaml"))
    with pytest.raises(asczoo.RecipeError, match="cannot read recipe file"):
        asczoo.register_recipes(tmp_path / "missing.yaml")
    with pytest.raises(asczoo.RecipeError, match="missing section 'frontend'"):
        asczoo.register_recipes({"models": {"x": {
            "backbone": {"plugin": "timm-resnet"}, "inflator": {"plugin": "inflate-3d"}, "head": {"plugin": "avgpool-fc"},
        }}})
    with pytest.raises(asczoo.RecipeError, match="defined twice"):
        asczoo.register_recipes({"models": {"resnet18-3d": {"extends": "resnet18-segments"}}})
    with pytest.raises(asczoo.RecipeError, match="'extends' names 'ghost'"):
        asczoo.register_recipes({"models": {"y": {"extends": "ghost"}}})


def test_yaml_is_read_safely(tmp_path):
    path = _write(tmp_path, "models: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(asczoo.RecipeError, match="not valid YAML"):
        asczoo.register_recipes(path)


def test_overrides_are_validated_like_recipes():
    with pytest.raises(asczoo.RecipeError, match="create_model.*section 'head': unknown key 'dropuot'"):
        asczoo.create_model("resnet18-3d", overrides={"head": {"dropuot": 0.1}})
    # removing a section by override
    model = asczoo.create_model("resnet18-3d", overrides={**TINY_OVERRIDES, "relation": None})
    assert len(model.relations) == 0


def test_backbone_forwards_timm_options_and_names_unknown_keys():
    model = asczoo.create_model("resnet18-3d", overrides={**TINY_OVERRIDES, "backbone": {**TINY_OVERRIDES["backbone"], "drop_rate": 0.25}})
    assert model.backbone.model.drop_rate == 0.25
    # not a timm TypeError from deep inside create_model: the recipe check names the key
    with pytest.raises(asczoo.RecipeError, match="section 'backbone': unknown key 'not_a_timm_arg'"):
        asczoo.create_model("resnet18-3d", overrides={"backbone": {"not_a_timm_arg": 1}})


def test_arch_tag_names_select_pinned_weights():
    asczoo.register_recipes({"models": {"tagged": {
        "extends": "resnet18-3d",
        "weights": {"v1": {"repo_id": "someone/tagged", "revision": "0" * 40, "default": True}},
    }}})
    assert "tagged.v1" in asczoo.list_pretrained()
    model = asczoo.create_model("tagged.v1", overrides=TINY_OVERRIDES)
    assert model.tag == "v1" and model.name == "tagged"
    assert model(torch.randn(1, *model.input_shape)).shape == (1, 10)


def test_backbone_refuses_timm_keys_that_load_files(tmp_path):
    with pytest.raises(asczoo.RecipeError, match="section 'backbone': unknown key 'checkpoint_path'"):
        asczoo.create_model("resnet18-3d", overrides={"backbone": {"checkpoint_path": str(tmp_path / "x.pth")}})
    from asczoo_plugins.timm_resnet import TimmResNet  # the class, used directly, refuses them too

    with pytest.raises(ValueError, match="'checkpoint_path' would make timm load weights"):
        TimmResNet("resnet18", checkpoint_path=str(tmp_path / "x.pth"))


def test_paper_figures_are_not_inherited_by_other_files():
    asczoo.register_recipes({"models": {"users-variant": {"extends": "resnet18-3d"}}})
    assert "paper" not in asczoo.model_recipe("users-variant")
    assert asczoo.model_recipe("preact18-3d")["paper"]["params_m"] == 22.3  # same file: inherited


@pytest.mark.parametrize("registry_class", ["model", "training"])
def test_one_named_registry_checks_names_extends_and_cycles_for_both_kinds(registry_class):
    from asczoo.recipes._named import NamedRegistry
    from asczoo.recipes.model_recipes import RecipeRegistry
    from asczoo.recipes.training_recipes import TrainingRecipeRegistry

    cls = RecipeRegistry if registry_class == "model" else TrainingRecipeRegistry
    assert issubclass(cls, NamedRegistry)
    reg = cls()
    section = cls.section
    with pytest.raises(asczoo.RecipeError, match="forms a cycle: a -> b -> a"):
        reg.add_source({"version": 1, section: {"a": {"extends": "b"}, "b": {"extends": "a"}}}, owner="t", strict=True)
    with pytest.raises(asczoo.RecipeError, match=f"names 'nowhere', which is not a known {cls.kind}"):
        reg.add_source({"version": 1, section: {"c": {"extends": "nowhere"}}}, owner="t", strict=True)
    with pytest.raises(asczoo.RecipeError, match="recipe name 'Bad Name' must be lower-case"):
        reg.add_source({"version": 1, section: {"Bad Name": {}}}, owner="t", strict=True)
    assert reg.entries == {}


def test_list_pretrained_explains_how_to_register_weights(tmp_path, monkeypatch, capsys):
    """Issue 23 item 3: with no weights registered, `asczoo list --pretrained` says so and how to add
    some (exit 0); the recipe it shows, in an ASCZOO_REGISTRY file, is then listed."""
    from asczoo.cli import main
    from asczoo.commands import list as list_command
    from asczoo.models import factory

    monkeypatch.setattr(factory, "list_pretrained", lambda pattern="*": [])
    assert main(["list", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no pretrained weights are registered: no recipe has a `weights` section.")
    assert "ASCZOO_REGISTRY" in out and "create_model(\"my-atresn.v1\", pretrained=True)" in out
    monkeypatch.undo()

    snippet = list_command.NO_WEIGHTS.split("\n  version: 1\n", 1)[1].split("\nthen ", 1)[0]
    path = tmp_path / "weights.yaml"
    path.write_text("version: 1\n" + "\n".join(line[2:] for line in snippet.splitlines()).replace(
        "<40-hex commit>", "c0ffee" * 6 + "c0ff") + "\n")
    monkeypatch.setenv("ASCZOO_REGISTRY", str(path))
    recipes.invalidate()
    assert main(["list", "--pretrained"]) == 0
    assert "my-atresn.v1" in capsys.readouterr().out.splitlines()
    assert main(["list", "--pretrained", "nothing*"]) == 0
    assert capsys.readouterr().out == "no pretrained weights match 'nothing*'; `asczoo list --pretrained` lists them all\n"
