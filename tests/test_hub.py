"""Saved models and the Hub, offline: round trip, Hub cache, pinned revisions, refusals, publishing.

Nothing here reaches the network: Hub downloads read a Hugging Face cache seeded in a temporary folder
(``HF_HUB_OFFLINE=1``, set by conftest), and uploads go to a fake ``HfApi`` that records what would
have been sent.
"""

from __future__ import annotations

import json
import re
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import asczoo
from asczoo.hub import files as hub
from asczoo.training.publish import find_run_files
from asczoo.recipes.model_recipes import RecipeError
from asczoo.testing import TINY_OVERRIDES
from data_fixtures import one_thread  # noqa: F401 - fixture
from model_fixtures import CLASSES, features, logits, seed_hub_cache, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = "asczoo-test/tiny-atresn"
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40


class Evil:
    """Unpickling this runs code: it would create the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def write_pickle_bomb(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": Evil(marker)}))


# -- the local round trip ------------------------------------------------------------------------------


def test_round_trip_gives_identical_logits_and_metadata(tmp_path):
    model = tiny_model()
    model.metrics = {"accuracy": 0.75}
    x = features(model)
    folder = model.save_pretrained(tmp_path / "saved", training={"epochs": 3, "dataset": "tau2019"})

    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = asczoo.from_pretrained(folder)
    assert not loaded.training
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert (loaded.name, loaded.classes, loaded.frontend_config, loaded.input_shape) == (
        model.name, CLASSES, model.frontend_config, model.input_shape)
    assert loaded.metrics == {"accuracy": 0.75}
    assert torch.equal(loaded.norm_mean, model.norm_mean) and torch.equal(loaded.norm_std, model.norm_std)
    # the weights file alone, or a path to it, finds the folder
    assert torch.equal(logits(asczoo.from_pretrained(folder / "model.safetensors"), x), logits(model, x))

    config = json.loads((folder / "config.json").read_text())
    assert config["asczoo_version"] == asczoo.__version__ and config["asczoo_format"] == hub.FORMAT_VERSION
    assert config["recipe"]["relation"]["plugin"] == "atresn"
    assert config["classes"] == CLASSES and config["frontend"] == model.frontend_config
    assert torch.allclose(torch.tensor(config["normalization"]["mean"]), model.norm_mean)
    assert config["metrics"] == {"accuracy": 0.75} and config["training"]["epochs"] == 3
    assert config["plugins"]["relation"] == {"part": "atresn", "plugin": "relation", "package": "asczoo",
                                             "version": asczoo.__version__}
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())


def test_classes_and_frontend_are_stored_once_and_old_duplicated_files_still_load(tmp_path):
    model = tiny_model()
    x = features(model)
    folder = model.save_pretrained(tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    assert not {"frontend", "classes", "num_classes"} & set(config["recipe"])
    assert config["plugins"]["frontend"]["part"] == "dcase-logmel"
    # the form written before: the recipe repeats the frontend and the classes
    config["recipe"].update(frontend=config["frontend"], classes=config["classes"], num_classes=len(CLASSES))
    (folder / "config.json").write_text(json.dumps(config))
    old = asczoo.from_pretrained(folder)
    assert old.classes == CLASSES and old.frontend_config == model.frontend_config
    assert torch.equal(logits(old, x), logits(model, x))


def test_model_card_describes_the_model(tmp_path):
    model = tiny_model()
    png = tmp_path / "cm.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n fake image")
    report = {"accuracy": 0.8125, "per_class_accuracy": {c: i / 10 for i, c in enumerate(CLASSES)},
              "dataset": "TAU Urban Acoustic Scenes 2019", "split": "fold1_evaluate", "loss": 0.61}
    folder = model.save_pretrained(tmp_path / "saved", report=report, confusion_matrix=png, repo_id="org/tiny")
    card = (folder / "README.md").read_text()

    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "asczoo" and meta["license"] == "apache-2.0"
    assert {"asczoo", "audio-classification", "atresn"} <= set(meta["tags"])
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "accuracy", "name": "Accuracy (%)", "value": 81.25}
    assert result["dataset"]["name"] == "TAU Urban Acoustic Scenes 2019"
    assert "| accuracy | 81.25 % |" in body and "| loss | 0.61 |" in body
    assert "| tram | 90.00 % |" in body
    assert "![Confusion matrix](confusion_matrix.png)" in body
    assert (folder / "confusion_matrix.png").read_bytes() == png.read_bytes()
    assert 'asczoo.from_pretrained("org/tiny")' in body and "asczoo predict hf-hub:org/tiny" in body
    assert "`atresn` (k=4" in body and "Training details were not recorded" in body
    assert "@inproceedings" in body and "ATReSN-Net" in body and "Interspeech 2021" in body
    # metrics derived from the report are kept in config.json too
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"]["accuracy"] == 0.8125 and config["metrics"]["per_class_accuracy"]["bus"] == 0.1


def test_model_card_escapes_class_names(tmp_path):
    """Issue 14 item 7: a class named ``<script>...`` (or holding Markdown) is text in the card, not markup."""
    hostile = ["<script>alert(1)</script>", "a|b", "[x](https://evil.example)", *CLASSES[3:]]
    torch.manual_seed(0)
    model = asczoo.create_model("resnet18-segments", overrides={**TINY_OVERRIDES, "classes": hostile})
    report = {"accuracy": 0.5, "per_class_accuracy": {c: 0.5 for c in hostile},
              "confusion_matrix": [[1 if i == j else 0 for j in range(10)] for i in range(10)]}
    folder = model.save_pretrained(tmp_path / "m", report=report)
    body = (folder / "README.md").read_text().split("---\n", 2)[2]
    body = re.sub(r"```yaml\n.*?\n```", "", body, flags=re.S)  # code blocks show YAML as text: inert
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "[x](https://evil.example)" not in body  # the brackets are escaped: no link
    assert "a\\|b" in body  # a table cell is not split


def test_tsv_refuses_class_names_with_a_tab(tmp_path):
    from asczoo.inference import collect_audio_files, predict_files
    from data_fixtures import write_clip

    torch.manual_seed(0)
    model = asczoo.create_model("resnet18-segments", overrides={**TINY_OVERRIDES, "classes": ["a\tb", *CLASSES[1:]]})
    write_clip(tmp_path / "x.wav", 1, seconds=1.0, rate=8000)
    with pytest.raises(ValueError, match=r"class name 'a\\tb' holds a tab"):
        predict_files(model, collect_audio_files([tmp_path / "x.wav"]), progress=False)


# -- strictness ----------------------------------------------------------------------------------------


def test_loading_is_strict_about_weights(tmp_path):
    model = tiny_model("resnet18-segments")
    folder = model.save_pretrained(tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))

    broken = dict(state)
    del broken["head.fc.bias"]
    save_file(broken, str(folder / "model.safetensors"))
    with pytest.raises(hub.ModelFormatError, match=r"1 missing: head\.fc\.bias"):
        asczoo.from_pretrained(folder)

    save_file({**state, "head.extra": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(hub.ModelFormatError, match=r"1 unexpected: head\.extra"):
        asczoo.from_pretrained(folder)

    save_file({**state, "head.fc.bias": torch.zeros(3)}, str(folder / "model.safetensors"))
    with pytest.raises(hub.ModelFormatError, match=r"wrong shape: head\.fc\.bias \(file \(3,\), model \(10,\)\)"):
        asczoo.from_pretrained(folder)

    # issue 14: weights stored in another dtype are refused, not silently cast
    for dtype in (torch.float16, torch.int64, torch.bool):
        save_file({**state, "head.fc.weight": state["head.fc.weight"].to(dtype)}, str(folder / "model.safetensors"))
        name = str(dtype).removeprefix("torch.")
        with pytest.raises(hub.ModelFormatError, match=rf"wrong dtype: head\.fc\.weight \(file {name}, model float32\)"):
            asczoo.from_pretrained(folder)


def test_config_is_checked_field_by_field(tmp_path):
    folder = tiny_model("resnet18-segments").save_pretrained(tmp_path / "m")
    good = json.loads((folder / "config.json").read_text())

    def load_with(**changes):
        config = {**good, **changes}
        (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not ...}))
        return asczoo.from_pretrained(folder)

    with pytest.raises(hub.ModelFormatError, match=r"unknown key\(s\) 'hook'"):
        load_with(hook="os.system")
    with pytest.raises(hub.ModelFormatError, match=r"key 'classes' must be a non-empty list of distinct strings"):
        load_with(classes=["a", "a"])
    with pytest.raises(hub.ModelFormatError, match=r"written in format 99 .* reads format 1"):
        load_with(asczoo_format=99)
    with pytest.raises(hub.ModelFormatError, match=r"missing key\(s\) recipe"):
        load_with(recipe=...)
    with pytest.raises(hub.ModelFormatError, match="normalisation statistics in config.json differ"):
        load_with(normalization={"mean": [[0.0] * 32] * 3, "std": [[1.0] * 32] * 3})
    # a recipe may not make a part fetch or read weights of its own
    recipe = json.loads(json.dumps(good["recipe"]))
    recipe["backbone"]["checkpoint_path"] = str(tmp_path / "evil.pth")
    with pytest.raises(hub.ModelFormatError, match=r"section 'backbone' sets 'checkpoint_path'"):
        load_with(recipe=recipe)
    recipe["backbone"].pop("checkpoint_path")
    recipe["backbone"]["arch"] = "not-an-arch"
    with pytest.raises(RecipeError, match="not-an-arch"):
        load_with(recipe=recipe)


# -- security: pickles and unknown plugins ---------------------------------------------------------------


def test_pickle_weights_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_model("resnet18-segments").save_pretrained(tmp_path / "m") / "config.json", folder)
    for name in ("pytorch_model.bin", "model.pt", "weights.pkl"):
        write_pickle_bomb(folder / name, marker)

    with pytest.raises(hub.UnsafeWeightsError, match=r"refusing to load model\.pt, pytorch_model\.bin, weights\.pkl"):
        asczoo.from_pretrained(folder)
    for name in ("pytorch_model.bin", "model.pt", "weights.pkl"):
        with pytest.raises(hub.UnsafeWeightsError, match=rf"refusing to load {name}.*only reads model\.safetensors"):
            asczoo.from_pretrained(folder / name)
    # a pickle renamed to model.safetensors is not parsed as one either
    shutil.copy(folder / "model.pt", folder / "model.safetensors")
    with pytest.raises(hub.ModelFormatError, match="model.safetensors is not a valid safetensors file"):
        asczoo.from_pretrained(folder)
    assert not marker.exists()


def test_pickle_only_hub_repo_is_refused(tmp_path, hf_cache):
    marker = tmp_path / "pwned"
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(tiny_model("resnet18-segments").save_pretrained(tmp_path / "m") / "config.json", staged)
    write_pickle_bomb(staged / "pytorch_model.bin", marker)
    seed_hub_cache(hf_cache, "asczoo-test/pickled", staged, COMMIT_1)

    with pytest.raises(hub.UnsafeWeightsError, match=r"hf-hub:asczoo-test/pickled: refusing to load pytorch_model\.bin"):
        asczoo.from_pretrained("asczoo-test/pickled")
    assert not marker.exists()


def test_unknown_plugin_names_the_package_to_install(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["recipe"]["relation"]["plugin"] = "fancy-block"
    config["plugins"]["relation"] = {"part": "fancy-block", "plugin": "fancy", "package": "asczoo-fancy",
                                     "version": "1.2.0"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeError) as info:
        asczoo.from_pretrained(folder)
    message = str(info.value)
    assert "no relation block named 'fancy-block' is registered" in message
    assert "pip install 'asczoo-fancy==1.2.0'" in message and "config.json" in message

    # a "plugin" that names code is only ever a registry key: nothing is imported
    config["recipe"]["relation"]["plugin"] = "os.system"
    config["plugins"].pop("relation")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeError, match="no relation block named 'os.system'"):
        asczoo.from_pretrained(folder)


# -- the Hub, offline ----------------------------------------------------------------------------------


def test_load_by_repo_id_from_seeded_cache_with_pinned_revisions(tmp_path, hf_cache):
    old, new = tiny_model(seed=1), tiny_model(seed=2)
    x = features(old)
    seed_hub_cache(hf_cache, REPO, old.save_pretrained(tmp_path / "old"), COMMIT_1, ref=None)
    seed_hub_cache(hf_cache, REPO, new.save_pretrained(tmp_path / "new"), COMMIT_2, ref="main")
    assert not torch.equal(logits(old, x), logits(new, x))

    for source in (REPO, f"hf-hub:{REPO}"):
        assert torch.equal(logits(asczoo.from_pretrained(source), x), logits(new, x))
    for source, kw in ((REPO, {"revision": COMMIT_1}), (f"hf-hub:{REPO}@{COMMIT_1}", {})):
        assert torch.equal(logits(asczoo.from_pretrained(source, **kw), x), logits(old, x))
    assert torch.equal(logits(asczoo.create_model(f"hf-hub:{REPO}"), x), logits(new, x))

    with pytest.raises(FileNotFoundError, match=r"not in the local Hugging Face cache and downloads are off"):
        asczoo.from_pretrained("asczoo-test/not-cached")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        asczoo.from_pretrained(REPO, revision="3" * 40)
    with pytest.raises(ValueError, match="pins revision"):
        asczoo.from_pretrained(f"hf-hub:{REPO}@{COMMIT_1}", revision=COMMIT_2)


def test_registry_tag_loads_the_pinned_commit(tmp_path, hf_cache):
    published = tiny_model(seed=1)
    seed_hub_cache(hf_cache, REPO, published.save_pretrained(tmp_path / "v1"), COMMIT_1, ref=None)
    seed_hub_cache(hf_cache, REPO, tiny_model(seed=2).save_pretrained(tmp_path / "v2"), COMMIT_2, ref="main")
    asczoo.register_recipes({"models": {"tiny-atresn": {
        "extends": "atresn-net-resnet18", **TINY_OVERRIDES,
        "weights": {"demo": {"repo_id": REPO, "revision": COMMIT_1}},
    }}})

    model = asczoo.create_model("tiny-atresn.demo", pretrained=True)
    x = features(model)
    assert torch.equal(logits(model, x), logits(published, x))
    assert model.classes == CLASSES and model.tag == "demo"
    # the registry model's frontend must be the one the weights were trained with
    asczoo.register_recipes({"models": {"tiny-atresn-16k": {
        "extends": "tiny-atresn", "frontend": {"sample_rate": 16000},
        "weights": {"demo": {"repo_id": REPO, "revision": COMMIT_1}},
    }}})
    with pytest.raises(hub.ModelFormatError, match=r"different frontend: sample_rate: saved 8000, built 16000"):
        asczoo.create_model("tiny-atresn-16k.demo", pretrained=True)


def test_env_var_cache_in_a_fresh_process(tmp_path, hf_cache):
    """HF_HUB_CACHE + HF_HUB_OFFLINE=1 are all a process needs to load by repo id."""
    model = tiny_model("resnet18-segments")
    seed_hub_cache(hf_cache, REPO, model.save_pretrained(tmp_path / "m"), COMMIT_1)
    x = features(model)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import torch, asczoo
        model = asczoo.from_pretrained("hf-hub:{REPO}")
        x = torch.load({str(tmp_path / 'x.pt')!r})
        with torch.no_grad():
            torch.save(model(x), {str(tmp_path / 'y.pt')!r})
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "y.pt"), logits(model, x))


# -- publishing ----------------------------------------------------------------------------------------


class FakeHub:
    """Stands in for the HfApi calls asczoo makes; records them and the uploaded files' contents."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def install(self, monkeypatch) -> "FakeHub":
        from huggingface_hub import HfApi

        def record(name):
            def method(api, *args, **kwargs):
                self.calls.append((name, args, kwargs))
                if name == "create_commit":
                    for op in args[1]:
                        self.uploaded[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                    return type("CommitInfo", (), {"commit_url": "https://huggingface.co/fake/commit/1"})()
            return method

        for name in ("create_repo", "create_branch", "create_commit", "upload_folder", "upload_file"):
            monkeypatch.setattr(HfApi, name, record(name))
        return self

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def make_run_dir(tmp_path: Path, model) -> Path:
    """A training run as ``asczoo.train`` leaves it: per-stage model folders, the final one in
    ``model/``, report.json and confusion_matrix.png."""
    run = tmp_path / "run"
    tiny_model("resnet18-segments").save_pretrained(run / "stage1" / "model")
    model.save_pretrained(run / "stage2" / "model")
    model.save_pretrained(run / "model", training={"recipe": "stage2", "epochs": 100})
    report = {"accuracy": 0.7, "per_class_accuracy": [0.7] * 10, "dataset": "TAU Urban Acoustic Scenes 2019",
              "split": "fold1_evaluate", "confusion_matrix": [[7 if i == j else 0 for j in range(10)] for i in range(10)]}
    (run / "report.json").write_text(json.dumps(report))
    (run / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n confusion")
    return run


def test_publish_uploads_weights_config_card_in_one_commit(tmp_path, monkeypatch, capsys):
    from asczoo.cli import main

    fake = FakeHub().install(monkeypatch)
    model = tiny_model()
    run = make_run_dir(tmp_path, model)

    assert main(["publish", str(run), "--repo", "org/tiny-atresn", "--private", "--revision", "v1"]) == 0
    assert fake.names() == ["create_repo", "create_branch", "create_commit"]
    (_, args, kwargs), (_, _, branch), (_, commit_args, commit) = fake.calls
    assert args == ("org/tiny-atresn",) and kwargs["private"] is True and kwargs["exist_ok"] is True
    assert branch["branch"] == "v1" and commit["revision"] == "v1"
    assert sorted(fake.uploaded) == ["README.md", "config.json", "confusion_matrix.png", "model.safetensors"]
    assert "https://huggingface.co/fake/commit/1" in capsys.readouterr().out

    card = fake.uploaded["README.md"].decode()
    assert "| accuracy | 70.00 % |" in card and "![Confusion matrix](confusion_matrix.png)" in card
    assert "asczoo predict hf-hub:org/tiny-atresn" in card and "epochs: 100" in card
    config = json.loads(fake.uploaded["config.json"])
    assert config["metrics"]["accuracy"] == 0.7 and config["training"] == {"recipe": "stage2", "epochs": 100}
    assert fake.uploaded["confusion_matrix.png"] == (run / "confusion_matrix.png").read_bytes()
    uploaded = tmp_path / "uploaded"
    uploaded.mkdir()
    for name, data in fake.uploaded.items():
        (uploaded / name).write_bytes(data)
    x = features(model)
    assert torch.equal(logits(asczoo.from_pretrained(uploaded), x), logits(model, x))


def test_push_to_hub_and_dry_run(tmp_path, monkeypatch):
    from asczoo.cli import main

    fake = FakeHub().install(monkeypatch)
    model = tiny_model("resnet18-segments")
    model.push_to_hub("org/plain", commit_message="first")
    assert fake.names() == ["create_repo", "create_commit"]
    assert fake.calls[1][2]["commit_message"] == "first" and fake.calls[1][2]["revision"] is None
    assert sorted(fake.uploaded) == ["README.md", "config.json", "model.safetensors"]

    fake.calls.clear()
    run = make_run_dir(tmp_path, model)
    assert main(["publish", str(run / "model"), "--repo", "org/plain", "--dry-run", str(tmp_path / "preview")]) == 0
    assert fake.calls == []
    assert sorted(p.name for p in (tmp_path / "preview").iterdir()) == [
        "README.md", "config.json", "confusion_matrix.png", "model.safetensors"]


def test_publish_refuses_runs_without_a_safetensors_model(tmp_path, monkeypatch):
    from asczoo.cli import main

    fake = FakeHub().install(monkeypatch)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    write_pickle_bomb(run / "checkpoints" / "last.pt", tmp_path / "pwned")
    assert main(["publish", str(run), "--repo", "org/x"]) == 2
    assert fake.calls == [] and not (tmp_path / "pwned").exists()
    with pytest.raises(FileNotFoundError, match=r"no saved model .*only last\.pt, which asczoo never loads"):
        find_run_files(run)


@pytest.mark.parametrize("where", ["run", "model", "model-dir"])
def test_publish_never_follows_a_symlink_out_of_the_run(tmp_path, monkeypatch, capsys, where):
    """Issue 14 item 2: a confusion_matrix.png (or a model folder) linking to a secret is refused, dry run included."""
    from asczoo.cli import main

    fake = FakeHub().install(monkeypatch)
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:SECRET")
    run = make_run_dir(tmp_path, tiny_model("resnet18-segments"))
    if where == "model-dir":  # the whole model folder is a link to one outside the run
        outside = tiny_model("resnet18-segments").save_pretrained(tmp_path / "elsewhere")
        import shutil

        shutil.rmtree(run / "model")
        (run / "model").symlink_to(outside)
    else:
        png = run / "confusion_matrix.png" if where == "run" else run / "model" / "confusion_matrix.png"
        png.unlink(missing_ok=True)
        png.symlink_to(secret)
    preview = tmp_path / "preview"
    assert main(["publish", str(run), "--repo", "org/x", "--dry-run", str(preview)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert main(["publish", str(run), "--repo", "org/x"]) == 2
    assert fake.calls == []
    assert not any(b"SECRET" in p.read_bytes() for p in preview.rglob("*") if p.is_file())
    with pytest.raises(hub.UnsafeWeightsError, match="symbolic link"):
        find_run_files(run)


def test_upload_failure_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import LocalTokenNotFoundError

    from asczoo.cli import main

    def refuse(api, *args, **kwargs):  # what HfApi raises when no token is configured
        raise LocalTokenNotFoundError("Token is required (write-access action) but no token found.")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    folder = tiny_model("resnet18-segments").save_pretrained(tmp_path / "m")
    assert main(["publish", str(folder), "--repo", "org/x"]) == 2
    err = capsys.readouterr().err
    assert "uploading to org/x failed: Token is required" in err and "hf auth login" in err
