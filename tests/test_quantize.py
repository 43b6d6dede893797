"""`asczoo quantize`: static int8 (calibrated) and fp16 copies, saved as safetensors, loaded back."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import asczoo
from asczoo.cli import main
from asczoo.analysis.complexity import measure
from asczoo.deploy.quantize import QuantizationError, QuantizedLayer, quantize_int8
from asczoo.testing.tiny import tiny_overrides
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(name="resnet18-3d", **sections):
    """A tiny model with non-trivial batch-norm statistics (as after training)."""
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides=tiny_overrides(**sections), num_classes=4)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, *model.input_shape))
    return model.eval()


def test_int8_round_trip_through_safetensors_and_from_pretrained(tmp_path):
    model = trained_like()
    calibration = [torch.randn(8, *model.input_shape, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    result = quantize_int8(model, calibration)
    q = result.model
    assert result.folded and all(isinstance(q.get_submodule(p), QuantizedLayer) for p in result.layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in q.modules()), "batch norms folded away"
    x = torch.randn(16, *model.input_shape, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert (ref - out).abs().max() < 0.1 * ref.abs().max()  # int8 error, not a different model
    assert not isinstance(model.get_submodule(result.layers[0]), QuantizedLayer), "the float model is untouched"
    q.save_pretrained(tmp_path / "int8")
    with safe_open(str(tmp_path / "int8" / "model.safetensors"), "pt") as f:
        assert f.get_tensor(result.layers[0] + ".weight").dtype == torch.int8
        assert f.get_tensor(result.layers[0] + ".weight_scale").dtype == torch.float32
    loaded = asczoo.from_pretrained(tmp_path / "int8")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out, rtol=0, atol=0)
    # complexity after quantising: the bytes of the stored tensors, the MACs of the float model
    before, after = measure(model), measure(loaded)
    assert after.macs_per_clip == before.macs_per_clip
    assert after.parameter_bytes < before.parameter_bytes / 3
    stored = sum(t.numel() * t.element_size() for k, t in loaded.state_dict().items()
                 if not k.endswith(("_scale", "_zero_point", "norm_mean", "norm_std")))
    assert after.parameter_bytes == stored


def test_fp16_model_is_stored_as_fp16_and_loads_back_into_float32(tmp_path):
    """fp16 weights are the saved form of an fp16 model; loading widens them (and only them) exactly."""
    from asczoo.deploy.quantize import quantize_fp16

    model = quantize_fp16(trained_like())
    folder = model.save_pretrained(tmp_path / "q16")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("head.fc.weight").dtype == torch.float16
    loaded = asczoo.from_pretrained(folder)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_relation_blocks_are_refused_by_name_unless_kept_in_float():
    model = trained_like("atresn-net-resnet18", relation={"k": 2})
    with pytest.raises(QuantizationError, match=r"relations\.res2_1 \(RelationBlock\).*--keep-float relations"):
        quantize_int8(model, [torch.randn(2, *model.input_shape)])
    q = quantize_int8(model, [torch.randn(4, *model.input_shape)], keep_float=["relations"]).model
    assert not any(isinstance(m, QuantizedLayer) for m in q.relations.modules())
    with pytest.raises(QuantizationError, match="no part of that name"):
        quantize_int8(model, [torch.randn(2, *model.input_shape)], keep_float=["nothing"])


def test_empty_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(trained_like(), [])


@pytest.mark.slow
def test_cli_int8_and_fp16_with_parity_report(tmp_path, capsys):
    from test_training import TINY, make_data

    data = make_data(tmp_path / "data")
    ds = asczoo.create_dataset("dcase2019-task1a", data, split="train", fold=1, frontend=TINY["frontend"])
    model = trained_like()
    model.classes = list(ds.classes)
    model.save_pretrained(tmp_path / "float")
    args = ["quantize", str(tmp_path / "float"), "--data", str(data), "--dataset", "dcase2019-task1a"]
    assert main([*args, "--to", "int8", "--calibration-clips", "8", "--out", str(tmp_path / "q8")]) == 0
    report = json.loads((tmp_path / "q8" / "parity.json").read_text())
    assert report["clips"] == 16 and 0 <= report["agreement"] <= 1 and report["scheme"] == "int8"
    complexity = json.loads((tmp_path / "q8" / "complexity.json").read_text())
    assert complexity["precision"] == "int8 (stored)"
    assert "parity on 16 evaluate clips" in capsys.readouterr().out
    assert main(["complexity", str(tmp_path / "q8"), "--json"]) == 0  # counted as stored, MACs of the float model
    counted = json.loads(capsys.readouterr().out)
    assert counted["parameter_bytes"] == complexity["parameter_bytes"]
    assert counted["macs_per_clip"] == measure(model).macs_per_clip
    assert main([*args, "--to", "int8", "--out", str(tmp_path / "q8")]) == 2, "a non-empty --out is refused"
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--to", "fp16", "--out", str(tmp_path / "q16")]) == 0
    with safe_open(str(tmp_path / "q16" / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert all(d == torch.float16 for k, d in dtypes.items() if k.endswith(".weight"))
    loaded = asczoo.from_pretrained(tmp_path / "q16")
    assert loaded.quantization["scheme"] == "fp16"
    # a model with relation blocks: refused by name before anything is read or written
    relation = trained_like("atresn-net-resnet18", relation={"k": 2})
    relation.classes = list(ds.classes)
    relation.save_pretrained(tmp_path / "rel")
    assert main(["quantize", str(tmp_path / "rel"), "--to", "int8", "--out", str(tmp_path / "relq")]) == 2
    assert "relations.res2_1" in capsys.readouterr().err and not (tmp_path / "relq").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
