"""The CP-JKU DCASE 2025 Task 1 inference template's own scripts, run unchanged on `asczoo package` output.

``evaluate_submission.py``, ``test_complexity.py`` and its ``complexity.py`` (torchinfo) come from a pinned
local copy of https://github.com/CPJKU/dcase2025_task1_inference: the folder named by
``ASCZOO_DCASE2025_TEMPLATE``, else ``tests/dcase2025_template/`` (see its README for how to get it).
The test is skipped without one, or without the template's requirements (pandas, scikit-learn, torchinfo).
"""

from __future__ import annotations

import csv
import json
import os
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

TEMPLATE = Path(os.environ.get("ASCZOO_DCASE2025_TEMPLATE") or Path(__file__).parent / "dcase2025_template")
SCRIPTS = ("evaluate_submission.py", "test_complexity.py", "complexity.py")
CLASSES = 3
DEVICES = ["a", "b", "s1", "s4", "s7"]

pytestmark = pytest.mark.slow

#: package label -> (registry entry, precision, per-device models); tiny widths, except the Full ones
VARIANTS = {
    "Plain_ZOO_task1_1": ("lc-resnet-narrow", "fp32", False),
    "Devices_ZOO_task1_1": ("lc-resnet-narrow", "fp32", True),
    "Relation_ZOO_task1_2": ("lc-atresn-narrow", "fp32", True),
    "Half_ZOO_task1_3": ("lc-resnet-narrow", "fp16", False),
    "Halfrel_ZOO_task1_4": ("lc-atresn-narrow", "fp16", True),
    "Full_ZOO_task1_1": ("lc-atresn-narrow", "fp32", True),
    "Fullhalf_ZOO_task1_3": ("lc-resnet-narrow", "fp16", False),
}
#: the DCASE 2025 Task 1 development set's clips: 1 s, 44.1 kHz, mono
CLIP_SECONDS, CLIP_RATE = 1.0, 44100


def _template_or_skip() -> Path:
    missing = [s for s in SCRIPTS if not (TEMPLATE / s).is_file()]
    if missing:
        pytest.skip(f"no copy of the DCASE 2025 inference template at {TEMPLATE} (missing {', '.join(missing)}); "
                    "set ASCZOO_DCASE2025_TEMPLATE")
    for module in ("pandas", "sklearn", "torchinfo"):
        pytest.importorskip(module, reason=f"the template's requirements include {module}")
    return TEMPLATE


def _model(entry: str, precision: str, seed: int, full: bool = False):
    from asczoo.deploy.quantize import quantize_fp16

    torch.manual_seed(seed)
    overrides = None if full else tiny_overrides()
    model = asczoo.create_model(entry, overrides=overrides, num_classes=CLASSES).eval()
    return quantize_fp16(model) if precision == "fp16" else model


def _clip(path: Path, rng, seconds: float, rate: int = CLIP_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)


@pytest.fixture(scope="session")
def template_world(tmp_path_factory):
    """The template scripts, a development and an evaluation set (tiny), the packages of every variant
    installed into one fresh environment, and the models they were built from."""
    template = _template_or_skip()
    from test_dcase_package import install_packages, template_requirements_env

    root = tmp_path_factory.mktemp("dcase-template")
    rng = np.random.default_rng(0)
    dev, evaluation = root / "dev", root / "eval"
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    test = ["filename\tscene_label"]
    for i, device in enumerate(DEVICES * 2):
        name = f"audio/clip{i}-{device}.wav"
        _clip(dev / name, rng, CLIP_SECONDS)
        meta.append(f"{name}\tclass_{i % CLASSES}\tloc-{i}\t{device}")
        test.append(f"{name}\tclass_{i % CLASSES}")
    (dev / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "test.csv").write_text("\n".join(test) + "\n")
    fold = ["filename\tdevice_id"]
    for i, device in enumerate(DEVICES + ["unknown"]):
        name = f"audio/{i}.wav"
        _clip(evaluation / name, rng, CLIP_SECONDS if i % 2 else 3.5)  # a longer file: several windows
        fold.append(f"{name}\t{device}")
    (evaluation / "evaluation_setup").mkdir(parents=True)
    (evaluation / "evaluation_setup" / "fold1_test.csv").write_text("\n".join(fold) + "\n")

    built = {}
    for seed, (label, (entry, precision, per_device)) in enumerate(VARIANTS.items()):
        general = root / "models" / label / "general"
        full = label.startswith("Full")
        _model(entry, precision, seed, full).save_pretrained(general)
        args = ["package", str(general), "--name", label, "--out", str(root / "pkg" / label),
                "--test-csv", str(root / "test.csv")]
        if per_device:
            device_model = root / "models" / label / "a"
            _model(entry, precision, seed + 100, full).save_pretrained(device_model)
            args += ["--device-model", f"a={device_model}"]
        assert main(args) == 0
        built[label] = general
    # a fresh environment where asczoo, timm, pluggy, pyyaml, safetensors and huggingface_hub cannot be
    # imported: only the template's requirements; the packages installed with pip from their folders
    env = template_requirements_env(root / "venv")
    install_packages(env, root, *(root / "pkg" / label for label in VARIANTS))
    return {"root": root, "dev": dev, "eval": evaluation, "env": env, "models": built, "template": template}


def _run_script(world, script: str, label: str, *extra: str) -> Path:
    """Run one template script unchanged, in a fresh working folder (it writes ``predictions/`` there)."""
    name, index = label.rsplit("_", 1)
    cwd = world["root"] / "runs" / label / script.split(".")[0]
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(world["env"].python), str(world["template"] / script), "--submission_name", name,
                           "--submission_index", index, *extra], capture_output=True, text=True, cwd=cwd,
                          env=world["env"].environ())
    assert done.returncode == 0, f"{script} on {label} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return cwd / "predictions" / label


@pytest.mark.parametrize("label", list(VARIANTS))
def test_test_complexity_counts_what_the_package_holds(template_world, label):
    entry, precision, _ = VARIANTS[label]
    out = _run_script(template_world, "test_complexity.py", label)
    counted = json.loads((out / "complexity.json").read_text())
    assert set(counted["per_device"]) == {"a", "b", "c", *(f"s{i}" for i in range(1, 11))}
    model = _model(entry, precision, 0, label.startswith("Full"))
    parameters = sum(p.numel() for p in model.parameters())
    bytes_each = 2 if precision == "fp16" else 4
    assert counted["max_Params"] == parameters * bytes_each, "fp16 parameters are held (and counted) as fp16"
    ours = json.loads((template_world["root"] / "pkg" / label / "complexity.json").read_text())["models"]["general"]
    macs = counted["per_device"]["b"]["MACs"]
    # torchinfo counts conv/linear layers by hook; asczoo counts the forward pass's ops (the kNN bmm included)
    assert abs(macs - ours["MACs"]) <= 0.05 * ours["MACs"], (macs, ours["MACs"])


@pytest.mark.parametrize("label", list(VARIANTS))
def test_evaluate_submission_output_matches_asczoo_predict(template_world, label, tmp_path):
    world = template_world
    out = _run_script(world, "evaluate_submission.py", label, "--dev_set_dir", str(world["dev"]),
                      "--eval_set_dir", str(world["eval"]))
    assert (out / "test_accuracy.json").is_file() and (out / "model_state_dict.pt").is_file()
    with open(out / "output.csv", newline="") as handle:
        official = list(csv.reader(handle, delimiter="\t"))
    with open(world["eval"] / "evaluation_setup" / "fold1_test.csv", newline="") as handle:
        listed = list(csv.reader(handle, delimiter="\t"))[1:]
    _, _, per_device = VARIANTS[label]
    ours_path = tmp_path / "output.csv"
    table = world["eval"] / "evaluation_setup" / "fold1_test.csv"
    assert main(["predict", str(world["models"][label]), str(table), "--dcase-output", str(ours_path), "-q"]) == 0
    with open(ours_path, newline="") as handle:
        ours = list(csv.reader(handle, delimiter="\t"))
    assert ours[0] == official[0], "same columns in the same order"
    assert [r[0] for r in ours[1:]] == [r[0] for r in official[1:]] == [r[0] for r in listed], \
        "same file names, in the table's order"
    # asczoo predict runs the general model; the package runs device a's own model on device a's files
    general = [i for i, (_, device) in enumerate(listed) if not (per_device and device == "a")]
    assert [ours[1 + i][1] for i in general] == [official[1 + i][1] for i in general], "same predicted scenes"
    np.testing.assert_allclose([[float(v) for v in ours[1 + i][2:]] for i in general],
                               [[float(v) for v in official[1 + i][2:]] for i in general],
                               atol=2e-3 if VARIANTS[label][1] == "fp16" else 1e-5)  # fp16 runs in fp16
