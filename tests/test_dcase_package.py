"""`asczoo package`: a DCASE 2025 Task 1 inference package, installed into a fresh environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import asczoo
from asczoo.cli import main
from asczoo.testing.tiny import tiny_overrides
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "Tester_ZOO_task1_1"


def saved_model(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3).eval()
    model.save_pretrained(path)
    return path


def clips(folder: Path, count: int = 3, seconds: float = 2.0, rate: int = 8000) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"clip{i}-{['a', 's4', 'b'][i % 3]}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
        paths.append(str(path))
    return paths


def test_package_layout_device_models_and_predict_in_process(tmp_path):
    from asczoo.deploy import dcase_package

    general, device_a = saved_model(tmp_path / "general"), saved_model(tmp_path / "a", seed=1)
    assert main(["package", str(general), "--name", NAME, "--out", str(tmp_path / "pkg"),
                 "--device-model", f"a={device_a}"]) == 0
    base = tmp_path / "pkg" / "Tester_ZOO_task1"
    assert (base / f"{NAME}.py").is_file() and (base / "resources" / "general" / "model.safetensors").is_file()
    complexity = json.loads((tmp_path / "pkg" / "complexity.json").read_text())
    assert set(complexity["models"]) == {"general", "a"} and complexity["models"]["a"]["MACs"] > 0
    models = dcase_package.load_models(base / "resources")
    assert models.for_device("a") is models.models["a"]
    assert models.for_device("unknown") is models.models["general"] and models.for_device("s4") is models.models["general"]
    files = clips(tmp_path / "audio")
    logits, classes = dcase_package.predict(files, ["a", "s4", "b"], models)
    assert classes == models.classes and len(logits) == 3 and logits[0].shape == (3,)
    general_only, _ = dcase_package.predict(files[:1], ["unknown"], models)
    assert not torch.allclose(logits[0], general_only[0]), "device a uses its own model"


def test_bad_names_and_non_empty_out_are_refused(tmp_path, capsys):
    general = saved_model(tmp_path / "general")
    assert main(["package", str(general), "--name", "lowercase_x_task1_9", "--out", str(tmp_path / "p")]) == 2
    assert "Lastname_INST_task1_N" in capsys.readouterr().err and not (tmp_path / "p").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["package", str(general), "--name", NAME, "--out", str(tmp_path / "full")]) == 2
    assert main(["package", str(general), "--name", NAME, "--out", str(tmp_path / "q"), "--device-model", "zz=x"]) == 2


#: what the DCASE 2025 inference template's requirements.txt lists (torchinfo, pandas, av, h5py, sox,
#: soundfile, torch, torchvision, torchaudio, tqdm, scikit-learn), against what asczoo needs: the rest
#: of asczoo's requirements, and asczoo itself, must not be needed by a package
HIDDEN_FROM_TEMPLATE_ENV = ("asczoo", "asczoo_plugins", "asczoo_nonlocal", "timm", "pluggy", "yaml", "safetensors",
                            "huggingface_hub")

_HIDE = """import importlib.abc, sys
HIDDEN = {hidden!r}
class _NotInTheTemplateRequirements(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not among the DCASE template's requirements)",
                                      name=name)
        return None
sys.meta_path.insert(0, _NotInTheTemplateRequirements())
"""


def template_requirements_env(root: Path):
    """A fresh virtual environment in which only the template's requirements can be imported.

    CI is offline, so the packages come from this environment (``ThrowawayEnv``), and every module that
    asczoo needs but the template's requirements do not list is hidden by an import hook installed at
    start-up (``.pth``): ``import asczoo`` or ``import timm`` fails there as in the organisers' env."""
    import sysconfig

    from test_new_plugin import ThrowawayEnv

    env = ThrowawayEnv(root)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    (purelib / "_template_requirements_only.py").write_text(_HIDE.format(hidden=HIDDEN_FROM_TEMPLATE_ENV))
    (purelib / "_template_requirements_only.pth").write_text("import _template_requirements_only\n")
    for module in ("asczoo", "timm", "safetensors"):
        probe = env.run("-c", f"import {module}", cwd=root)
        assert probe.returncode != 0 and "not among the DCASE template" in probe.stderr, probe.stderr[-500:]
    return env


def install_packages(env, root: Path, *packages: Path) -> None:
    """``pip install`` the packages from their folders (a real install: package data must come along),
    offline and without dependencies (torch, numpy, soundfile are the template's and already there)."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(env.python), "install", "--no-deps",
                           "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                           *(str(p) for p in packages)], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


#: the template's calls (evaluate_submission.py, test_complexity.py), run inside the fresh environment
_TEMPLATE_CALLS = """import importlib, importlib.resources as res, json, sys
s = importlib.import_module(sys.argv[1])
files = json.loads(sys.argv[2])
logits, classes = s.predict(file_paths=files, device_ids=['a', 's4', 'unknown'], model_file_path=None, use_cuda=False)
model = s.load_model()
state = model.model.state_dict()
with res.path(sys.argv[1].rsplit('.', 1)[0] + '.resources', 'dummy.wav') as dummy:
    devices = ['a', 'b', 'c'] + [f's{i}' for i in range(1, 11)]
    inputs = s.load_inputs([str(dummy)] * len(devices), devices, model)
    parameter_bytes = {d: sum(p.numel() * p.element_size() for p in s.get_model_for_device(model, d).parameters())
                       for d in devices}
    shapes = [list(x.shape) for x in inputs]
print(json.dumps({'classes': classes, 'probs': [l.softmax(-1).tolist() for l in logits], 'where': s.__file__,
                  'bytes': parameter_bytes, 'shapes': shapes, 'state': len(state)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32-general", "fp16-relation-devices"])
def test_installed_package_runs_with_only_the_template_requirements(tmp_path, variant):
    """The package installs into a fresh environment without asczoo, timm, pluggy, pyyaml, safetensors
    or huggingface_hub, runs the template's calls there, and predicts what `asczoo predict` does."""
    from asczoo.deploy.quantize import quantize_fp16

    torch.manual_seed(0)
    entry = "atresn-net-resnet18" if "relation" in variant else "resnet18-3d"
    model = asczoo.create_model(entry, overrides=tiny_overrides(), num_classes=3).eval()
    model = quantize_fp16(model) if variant.startswith("fp16") else model
    general = tmp_path / "general"
    model.save_pretrained(general)
    args = ["package", str(general), "--name", NAME, "--out", str(tmp_path / "pkg")]
    if "devices" in variant:
        torch.manual_seed(1)
        other = asczoo.create_model(entry, overrides=tiny_overrides(), num_classes=3).eval()
        other = quantize_fp16(other) if variant.startswith("fp16") else other
        other.save_pretrained(tmp_path / "device-a")
        args += ["--device-model", f"a={tmp_path / 'device-a'}"]
    assert main(args) == 0
    files = clips(tmp_path / "audio")
    env = template_requirements_env(tmp_path / "venv")
    install_packages(env, tmp_path, tmp_path / "pkg")
    out = subprocess.run([str(env.python), "-c", _TEMPLATE_CALLS, f"Tester_ZOO_task1.{NAME}", json.dumps(files)],
                         capture_output=True, text=True, env={**env.environ(), "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(tmp_path / "venv") in result["where"], "the package is imported from the fresh environment"
    bytes_each = 2 if variant.startswith("fp16") else 4
    assert set(result["bytes"].values()) == {sum(p.numel() for p in model.parameters()) * bytes_each}
    assert all(shape[1:] == list(model.input_shape) for shape in result["shapes"])
    assert main(["predict", str(general), *files, "--scores", str(tmp_path / "scores.tsv"), "--output",
                 str(tmp_path / "sub.tsv"), "-q"]) == 0
    rows = [line.split("\t") for line in (tmp_path / "scores.tsv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    assert result["classes"] == header[-3:]
    expected = [[float(v) for v in row[-3:]] for row in body]
    # file 0 is device a's: with a device model the package uses that one, asczoo predict the general one
    checked = slice(1, None) if "devices" in variant else slice(None)
    np.testing.assert_allclose(result["probs"][checked], expected[checked], atol=2e-3 if bytes_each == 2 else 1e-4)


def test_out_overlapping_the_models_read_is_refused_with_or_without_overwrite(tmp_path, capsys):
    run = saved_model(tmp_path / "runs" / "general")
    (tmp_path / "runs" / "notes.txt").write_text("the user's own file")
    for out in (run, tmp_path / "runs", run / "pkg"):
        for extra in ([], ["--overwrite"]):
            assert main(["package", str(run), "--name", NAME, "--out", str(out), *extra]) == 2
            assert "which the package is read from" in capsys.readouterr().err
    assert (run / "config.json").is_file() and (tmp_path / "runs" / "notes.txt").read_text() == "the user's own file"
    device = saved_model(tmp_path / "device-a", seed=1)
    assert main(["package", str(run), "--name", NAME, "--out", str(device / "x"), "--device-model", f"a={device}"]) == 2


def test_overwrite_replaces_only_an_earlier_package(tmp_path, capsys):
    general = saved_model(tmp_path / "general")
    out = tmp_path / "pkg"
    assert main(["package", str(general), "--name", NAME, "--out", str(out)]) == 0
    manifest = json.loads((out / "asczoo-package.json").read_text())
    assert "Tester_ZOO_task1/resources/dummy.wav" in manifest["files"] and "pyproject.toml" in manifest["files"]
    assert main(["package", str(general), "--name", NAME, "--out", str(out), "--overwrite"]) == 0
    (out / "mine.txt").write_text("not written by asczoo")
    assert main(["package", str(general), "--name", NAME, "--out", str(out), "--overwrite"]) == 2
    assert "'mine.txt', which asczoo package did not write" in capsys.readouterr().err
    assert (out / "mine.txt").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    assert main(["package", str(general), "--name", NAME, "--out", str(other), "--overwrite"]) == 2
    assert "no asczoo-package.json" in capsys.readouterr().err and (other / "thesis.tex").is_file()


def test_int8_is_refused_naming_the_official_counter(tmp_path, capsys):
    from asczoo.deploy import dcase_package

    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3).eval()
    model.quantization = {"scheme": "int8"}
    with pytest.raises(dcase_package.PackageRefused, match="torchinfo.*quantized modules.*fp32 or fp16"):
        dcase_package.write_package(NAME, {"general": model}, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_fp16_package_holds_fp16_parameters_and_has_the_template_resources(tmp_path):
    from asczoo.deploy import dcase_package
    from asczoo.deploy.quantize import quantize_fp16

    torch.manual_seed(0)
    model = quantize_fp16(asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), num_classes=3).eval())
    model.save_pretrained(tmp_path / "half")
    (tmp_path / "test.csv").write_text("filename\tscene_label\naudio/x.wav\tclass_0\n")
    assert main(["package", str(tmp_path / "half"), "--name", NAME, "--out", str(tmp_path / "pkg"),
                 "--test-csv", str(tmp_path / "test.csv")]) == 0
    resources = tmp_path / "pkg" / "Tester_ZOO_task1" / "resources"
    assert (resources / "__init__.py").is_file() and (resources / "test.csv").read_text().startswith("filename")
    waveform, rate = soundfile.read(resources / "dummy.wav")
    assert rate == model.frontend_config["sample_rate"] and len(waveform) == rate * model.frontend_config["clip_seconds"]
    loaded = dcase_package.load_models(resources)
    assert {p.dtype for p in loaded.for_device("s9").parameters()} == {torch.float16}
    assert loaded.model is loaded.models, "evaluate_submission.py saves load_model().model.state_dict()"
