"""ONNX from waveform to logits (``asczoo export --with-frontend``): the frontend inside the graph
matches PyTorch's frontend and model (issue 17, item 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from data_fixtures import one_thread  # noqa: F401 - fixture
from model_fixtures import tiny_model

import asczoo
from asczoo.cli import main
from asczoo.data.frontend import create_frontend
from asczoo.deploy.waveform_export import LogMelGraph, export_onnx_with_frontend, torch_export

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def waves(model, batch: int, seed: int, channels: int = 2) -> torch.Tensor:
    samples = int(round(model.frontend_config["clip_seconds"] * model.frontend_config["sample_rate"]))
    return 0.1 * torch.randn(batch, channels, samples, generator=torch.Generator().manual_seed(seed))


def reference(model, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    frontend = create_frontend(**model.frontend_config)
    features = frontend.batch(wave, frontend.sample_rate)
    with torch.no_grad():
        return features, model.eval()(features)


def run(path, wave: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"waveform": wave.numpy()})[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model("atresn-net-resnet18")
    path = tmp_path_factory.mktemp("wave") / "atresn.onnx"
    result = export_onnx_with_frontend(model, path)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    onnx.checker.check_model(str(path), full_check=True)  # onnx's own checker, strict shape inference
    return model, path


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
def test_logits_match_pytorch_frontend_and_model(exported, batch):
    model, path = exported
    wave = waves(model, batch, seed=batch)
    _, expected = reference(model, wave)
    np.testing.assert_allclose(run(path, wave), expected.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2])
def test_logmel_in_onnx_matches_the_frontend(tmp_path, channels):
    model = tiny_model("resnet18-3d")
    graph = LogMelGraph(model.frontend_config, channels=channels).eval()
    wave = waves(model, 3, seed=5, channels=channels)
    program = torch_export(graph, wave[:2], opset=18, optimize=True,
                           dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), input_name="waveform")
    program.save(str(tmp_path / "logmel.onnx"))
    expected, _ = reference(model, wave)
    np.testing.assert_allclose(run(tmp_path / "logmel.onnx", wave), expected.numpy(), rtol=0, atol=1e-3)


def test_metadata_and_input_say_what_is_expected(exported):
    model, path = exported
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    wave_meta = json.loads(meta["asczoo.waveform"])
    assert wave_meta["sample_rate"] == 8000 and wave_meta["shape"] == ["batch", 2, 16000]
    assert json.loads(meta["asczoo.classes"]) == model.classes
    (inp,) = proto.graph.input
    assert inp.name == "waveform"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [2, 16000] and isinstance(dims[0], str)
    with pytest.raises(Exception, match=r"(?i)rank.*waveform|waveform.*rank"):
        run(path, waves(model, 2, 0)[:, 0])
    with pytest.raises(Exception, match=r"waveform"):
        run(path, 0.1 * torch.randn(1, 2, 12000))  # another sample rate's clip length


def test_cli_with_frontend(tmp_path, capsys):
    model = tiny_model("resnet18-3d")
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "model"), "--format", "onnx", "--with-frontend", str(out)]) == 0
    assert "waveform" in capsys.readouterr().out
    wave = waves(model, 2, seed=9)
    np.testing.assert_allclose(run(out, wave), reference(model, wave)[1].numpy(), rtol=0, atol=1e-4)


def test_readme_example_runs_with_onnxruntime_and_numpy_only(exported, tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- waveform-onnx-example -->\n```python\n(.*?)```", text, re.S).group(1)
    assert "import torch" not in block and "asczoo" not in block.replace("asczoo.", "")
    model, path = exported
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atresn.onnx").write_bytes(Path(path).read_bytes())
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["logits"].shape == (1, len(model.classes))


@pytest.mark.slow
def test_full_size_parity(tmp_path):
    torch.manual_seed(0)
    model = asczoo.create_model("atresn-net-resnet18").eval()
    with torch.no_grad():
        for block in model.relations.values():
            block.output.norm.weight.fill_(1.0)
    path = tmp_path / "full.onnx"
    export_onnx_with_frontend(model, path, verify=False)
    onnx.checker.check_model(str(path), full_check=True)
    for batch in (1, 2):
        wave = waves(model, batch, seed=batch)
        expected_features, expected = reference(model, wave)
        np.testing.assert_allclose(run(path, wave), expected.numpy(), rtol=0, atol=1e-4)
    graph = LogMelGraph(model.frontend_config).eval()
    program = torch_export(graph, wave, opset=18, optimize=True, dynamic_shapes=None, input_name="waveform")
    program.save(str(tmp_path / "logmel.onnx"))
    np.testing.assert_allclose(run(tmp_path / "logmel.onnx", wave), expected_features.numpy(), rtol=0, atol=1e-3)
