"""``asczoo predict --backend onnxruntime``: the same frontend and windows, the network in onnxruntime."""

from __future__ import annotations

import pytest
from data_fixtures import one_thread, write_clip  # noqa: F401 - fixture
from model_fixtures import tiny_model

from asczoo.cli import main


def _scores(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return {r[0]: [float(v) for v in r[2:]] for r in rows[1:]}  # filename, label, one column per class


def test_onnxruntime_backend_predicts_what_torch_predicts(tmp_path, capsys, one_thread):
    """On the plain 3D model, the one the backend is for (relation models' graphs are checked against
    PyTorch by every export, tests/test_export.py)."""
    folder = tiny_model("resnet18-3d", seed=1).save_pretrained(tmp_path / "model")
    for i in range(3):  # one clip longer than the model's 2 s: several windows
        write_clip(tmp_path / "audio" / f"clip{i}.wav", seed=i, seconds=2.0 + 1.5 * i, rate=8000, tone=300 + 200 * i)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.tsv"
        argv = ["predict", str(folder), str(tmp_path / "audio"), "--output", str(out), "--hop", "1",
                "--backend", backend, "--quiet"]
        assert main(argv) == 0, capsys.readouterr().err
        outputs[backend] = (out.read_text(), _scores(tmp_path / f"{backend}.scores.tsv"))
    err = capsys.readouterr().err
    assert "onnxruntime: " in err and "exported and verified" in err
    assert outputs["onnxruntime"][0] == outputs["torch"][0]  # the same labels for the same files
    for file, probabilities in outputs["torch"][1].items():
        assert outputs["onnxruntime"][1][file] == pytest.approx(probabilities, abs=1e-4), file


def test_onnxruntime_backend_runs_on_the_cpu_only(tmp_path, capsys):
    folder = tiny_model("resnet18-3d").save_pretrained(tmp_path / "model")
    write_clip(tmp_path / "a.wav", seed=0, seconds=2.0, rate=8000)
    assert main(["predict", str(folder), str(tmp_path / "a.wav"), "--backend", "onnxruntime", "--device", "cuda"]) == 2
    assert "runs on the CPU" in capsys.readouterr().err
