"""Training recipes: the shipped files validate, carry the paper's hyper-parameters, take overrides,
and refuse bad values with a message that names the key."""

from __future__ import annotations

import textwrap

import pytest

from asczoo import training_recipes
from asczoo.arguments import RecipeError
from asczoo.cli import main

PAPER = ["dcase2019-atresn-net-resnet18", "dcase2018-atresn-net-resnet18", "dcase2019-atresn-net-preact18",
         "dcase2018-atresn-net-preact18", "dcase2019-resnet18-segments", "dcase2019-preact18-segments",
         "dcase2018-resnet18-segments", "dcase2018-preact18-segments"]


def test_every_shipped_recipe_is_registered_and_valid():
    names = training_recipes.list_training_recipes()
    for name in [*PAPER, "quickstart"]:
        assert name in names, name
        _, recipe = training_recipes.load(name)
        assert recipe["stages"], name


@pytest.mark.parametrize("name", [n for n in PAPER if "atresn" in n])
def test_paper_two_stage_hyper_parameters(name):
    _, recipe = training_recipes.load(name)
    stage1, stage2 = recipe["stages"]
    assert recipe["data"]["dataset"] == ("dcase2019-task1a" if "2019" in name else "dcase2018-task1a")
    assert recipe["data"]["fold"] == 1
    assert stage1["unit"] == "segment" and stage1["model"].endswith("-segments")
    assert stage1["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                                   "nesterov": True, "dampening": 0.0}
    assert (stage1["batch_size"], stage1["epochs"]) == (128, 105)
    assert stage1["schedule"] == {"name": "step", "step_epochs": 30, "gamma": 0.1}
    assert stage2["init_from"] == "stage1" and stage2["unit"] == "clip"
    assert stage2["model"] == ("atresn-net-preact18" if "preact" in name else "atresn-net-resnet18")
    assert stage2["optimizer"]["lr"] == 0.002 and stage2["optimizer"]["momentum"] == 0.9
    assert stage2["optimizer"]["weight_decay"] == 1e-4 and not stage2["optimizer"]["nesterov"]
    assert (stage2["batch_size"], stage2["epochs"]) == (16, 100)
    assert stage2["schedule"] == {"name": "step", "step_epochs": 40, "gamma": 0.1}
    for stage in (stage1, stage2):
        assert stage["augment"] == [{"plugin": "lr-swap", "per": "batch"}]


def test_segment_baselines_are_stage_one_alone():
    _, recipe = training_recipes.load("dcase2018-preact18-segments")
    assert [s["model"] for s in recipe["stages"]] == ["preact18-segments"]
    assert recipe["data"]["dataset"] == "dcase2018-task1a"


def test_overrides_address_stages_by_index_or_name_and_accept_yaml_numbers():
    _, recipe = training_recipes.load("dcase2019-atresn-net-resnet18", [
        "stages.1.epochs=3", "stages.stage1.optimizer.lr=1e-2", "seed=7", "engine.compile=true",
        "stages.stage2.overrides.relation.k=8",
    ])
    assert recipe["stages"][1]["epochs"] == 3
    assert recipe["stages"][0]["optimizer"]["lr"] == 0.01  # '1e-2' is a string to YAML 1.1; accepted
    assert recipe["seed"] == 7 and recipe["engine"]["compile"] is True
    assert recipe["stages"][1]["overrides"] == {"relation": {"k": 8}}
    # the mapping form used by `extends` and the Python API does the same
    _, same = training_recipes.load("dcase2019-atresn-net-resnet18", {"stages": {"stage2": {"epochs": 3}}})
    assert same["stages"][1]["epochs"] == 3


@pytest.mark.parametrize("item, key", [
    ("stages.1.epochs=0", "epochs"),
    ("stages.0.optimizer.lr=fast", "lr"),
    ("stages.0.optimizer.name=rmsprop", "name"),
    ("stages.0.bogus=1", "bogus"),
    ("stages.1.init_from=stage9", "init_from"),
    ("stages.4.epochs=3", "stages.4"),
    ("stages.stage7.epochs=3", "stages.stage7"),
    ("stages.0.model=no-such-model", "model"),
    ("stages.1.overrides.relation.k=many", "'k'"),
    ("stages.0.schedule.step_epochs=-1", "step_epochs"),
    ("stages.0.unit=frame", "unit"),
    ("data.dataset=nope", "dataset"),
    ("engine.device=tpu", "device"),
    ("stages.0.augment=[{plugin: lr-swap, p: high}]", "'p'"),
    ("stages.1.unit=segment", "unit"),
])
def test_validation_errors_name_the_key(item, key):
    with pytest.raises(RecipeError) as info:
        training_recipes.load("dcase2019-atresn-net-resnet18", [item])
    message = str(info.value)
    assert key in message, message
    assert "dcase2019-atresn-net-resnet18" in message and "dcase2019.yaml" in message, message


def test_recipe_files_name_file_recipe_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent("""
        version: 1
        recipes:
          mine:
            extends: dcase2019-resnet18-segments
            stages: {stage1: {epochs: 2, batch_size: many}}
    """))
    with pytest.raises(RecipeError) as info:
        training_recipes.load(path)
    assert str(path) in str(info.value) and "'mine'" in str(info.value) and "batch_size" in str(info.value)

    path.write_text(textwrap.dedent("""
        version: 1
        recipes:
          mine:
            extends: dcase2019-resnet18-segments
            data: {dataset: dcase2018-task1a}
            stages: {stage1: {epochs: 2}}
          other:
            extends: mine
            stages: {0: {batch_size: 4}}
    """))
    name, recipe = training_recipes.load(f"{path}:other")
    assert name == "other" and recipe["data"]["dataset"] == "dcase2018-task1a"
    assert (recipe["stages"][0]["epochs"], recipe["stages"][0]["batch_size"]) == (2, 4)
    with pytest.raises(RecipeError, match="pick one"):
        training_recipes.load(path)

    path.write_text("version: 1\nrecipes:\n  a: {extends: b}\n  b: {extends: a}\n")
    with pytest.raises(RecipeError, match="cycle"):
        training_recipes.load(f"{path}:a")
    path.write_text("version: 2\nrecipes: {}\n")
    with pytest.raises(RecipeError, match="'version'"):
        training_recipes.load(path)


def test_unknown_name_suggests_similar():
    with pytest.raises(KeyError, match="dcase2019-atresn-net-resnet18"):
        training_recipes.load("dcase2019-atresn-net-resnet")


def test_cli_lists_and_shows(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "dcase2018-atresn-net-resnet18" in out
    assert main(["train", "dcase2019-atresn-net-resnet18", "--show", "--set", "stages.1.epochs=3"]) == 0
    assert "epochs: 3" in capsys.readouterr().out
    assert main(["train", "dcase2019-atresn-net-resnet18", "--show", "--set", "stages.1.epochs=zero"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_in_process_plugin_training_recipes_are_seen():
    import asczoo
    from asczoo import plugins, training_recipes

    training_recipes.list_training_recipes()  # cache the registry first

    class Recipes:
        @asczoo.hookimpl
        def asczoo_register_training_recipes(self, register):
            register({"version": 1, "recipes": {"my-in-process-recipe": {"extends": "quickstart"}}})

    assert plugins.register_plugin(Recipes(), "in-process-recipes")
    assert "my-in-process-recipe" in training_recipes.list_training_recipes()


def test_set_switches_the_schedule_and_optimiser_kind():
    """Issue 14 item 8: `--set schedule.name=cosine` replaces a step schedule (its step_epochs go with it)."""
    from asczoo import training_recipes

    _, base = training_recipes.load("quickstart")
    assert base["stages"][0]["schedule"]["name"] == "step"
    _, rec = training_recipes.load("quickstart", ["stages.0.schedule.name=cosine"])
    assert rec["stages"][0]["schedule"] == {"name": "cosine", "min_lr": 0.0}
    _, rec = training_recipes.load("quickstart", ["stages.0.schedule.name=cosine", "stages.0.schedule.min_lr=0.001"])
    assert rec["stages"][0]["schedule"] == {"name": "cosine", "min_lr": 0.001}
    # the same kind still merges option by option
    _, rec = training_recipes.load("quickstart", ["stages.0.schedule.step_epochs=3"])
    assert rec["stages"][0]["schedule"]["step_epochs"] == 3 and rec["stages"][0]["schedule"]["name"] == "step"
    lr = base["stages"][0]["optimizer"]["lr"]
    _, rec = training_recipes.load("quickstart", ["stages.0.optimizer.name=adam", f"stages.0.optimizer.lr={lr}"])
    assert rec["stages"][0]["optimizer"]["name"] == "adam" and "momentum" not in rec["stages"][0]["optimizer"]
