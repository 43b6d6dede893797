"""What asczoo writes, checked by its consumers' own tools: onnxruntime's own dynamic quantisation and
huggingface_hub's ModelCard parser. (onnx's full checker runs on every export in tests/test_export.py
and tests/test_waveform_export.py; hearvalidator in tests/test_hear.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from data_fixtures import one_thread  # noqa: F401 - fixture
from model_fixtures import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _synthetic(model, count: int, seed: int, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``count`` clips: noise plus one fixed pattern per class (a task a model can learn)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(model.classes), (count,), generator=generator)
    return torch.randn(count, *model.input_shape, generator=generator) + 2.0 * patterns[labels], labels


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory):
    """A tiny ATReSN-Net (relation blocks included) taught the synthetic task, exported to ONNX, and a
    held-out synthetic set: a model with random weights has near-ties everywhere, which no int8 scheme
    keeps; agreement is only meaningful for a model whose decisions have margins."""
    from asczoo.deploy.export import export_onnx

    model = tiny_model("atresn-net-resnet18")
    patterns = torch.randn(len(model.classes), *model.input_shape, generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)  # 1e-2 overshoots on some CPUs (57 % held-out)
    model.train()
    for step in range(80):
        x, y = _synthetic(model, 16, step, patterns)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    x, y = _synthetic(model, 200, 10_000, patterns)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9, "the model learned the synthetic task"
    path = export_onnx(model, tmp_path_factory.mktemp("consumers") / "features.onnx", verify=False).path
    return path, x.numpy()


@pytest.mark.slow
def test_onnxruntime_dynamic_quantisation_keeps_top1(trained_export, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    path, x = trained_export
    quantized = tmp_path / "dynamic-int8.onnx"
    # per-channel weights, 7-bit range: onnxruntime's advice for x86 CPUs without VNNI
    quantize_dynamic(str(path), str(quantized), per_channel=True, reduce_range=True)
    onnx.checker.check_model(str(quantized), full_check=True)
    runs = {}
    for label, file in (("float", path), ("int8", quantized)):
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        runs[label] = session.run(["logits"], {"features": x})[0]
    assert not np.allclose(runs["float"], runs["int8"]), "the quantised graph really is another graph"
    agreement = float((runs["float"].argmax(1) == runs["int8"].argmax(1)).mean())
    assert agreement >= 0.99, f"top-1 agreement {agreement:.3f} after onnxruntime quantize_dynamic"


@pytest.mark.parametrize("with_metrics", [True, False])
def test_saved_model_card_parses_with_huggingface_hub(tmp_path, with_metrics):
    from huggingface_hub import ModelCard

    model = tiny_model("resnet18-3d")
    metrics = {"accuracy": 0.625, "dataset": "tau2022-mobile", "split": "test"} if with_metrics else None
    model.save_pretrained(tmp_path / "m", metrics=metrics)
    card = ModelCard.load(tmp_path / "m" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "asczoo" and "acoustic-scene-classification" in data["tags"]
    if with_metrics:
        results = card.data.eval_results  # huggingface_hub's own reading of model-index
        assert results and results[0].metric_type == "accuracy" and results[0].metric_value == 62.5
        assert results[0].dataset_type == "tau2022-mobile" and results[0].dataset_split == "test"
    else:
        assert "model-index" not in data and not card.data.eval_results
