"""``asczoo explain``: the neighbours drawn are the block's own kNN for the clip (issue 17, item 4)."""

from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import tiny_model

from asczoo.data.audio import read_audio, write_audio
from asczoo.cli import main
from asczoo.inference import clip_windows, model_frontend
from asczoo.ops import to_points

pytest.importorskip("matplotlib")


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("atresn-net-resnet18")
    model.save_pretrained(tmp_path / "model")
    g = torch.Generator().manual_seed(3)
    audio = tmp_path / "clip.wav"
    write_audio(audio, 0.3 * torch.randn(2, 16000, generator=g), 8000)
    return model, tmp_path / "model", audio


def block_knn(model, features):
    """Each block's neighbour index for the clip, computed by calling its grouper on its own input."""
    inputs, handles = {}, []
    for name, block in model.relations.items():
        handles.append(block.register_forward_pre_hook(lambda _m, a, name=name: inputs.__setitem__(name, a[0])))
    with torch.no_grad():
        model.eval()(features[None])
        for h in handles:
            h.remove()
        out = {}
        for name, block in model.relations.items():
            g = block.grouper.downsample(inputs[name])
            out[name] = block.grouper(to_points(g), g.shape[3] * g.shape[4])[0]
    return out


def test_neighbours_drawn_are_the_blocks_knn(saved, tmp_path):
    model, folder, audio = saved
    out = tmp_path / "explain.png"
    assert main(["explain", str(folder), str(audio), "--out", str(out), "--top", "4"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out.with_suffix(".json").read_text())
    features = clip_windows(model_frontend(model), *read_audio(audio))[0]
    expected = block_knn(model, features)
    assert set(result["blocks"]) == set(model.relations) == {"res2_1", "res2_2", "res3_1", "res3_2"}
    for name, block in result["blocks"].items():
        assert len(block["points"]) == 4
        n, f, t = block["grid"]
        norms = [p["relation_norm"] for p in block["points"]]
        assert norms == sorted(norms, reverse=True) and norms[0] > 0
        for point in block["points"]:
            assert point["index"] == (point["segment"] * f + point["f"]) * t + point["t"]
            got = [nb["index"] for nb in point["neighbours"]]
            assert got == expected[name][point["index"]].tolist()
            # attentive pooling: softmax weights over the k neighbours
            assert sum(nb["weight"] for nb in point["neighbours"]) == pytest.approx(1.0, abs=1e-5)
            assert all(nb["segment"] != point["segment"] for nb in point["neighbours"])


def test_points_the_user_picks(saved, tmp_path):
    _, folder, audio = saved
    assert main(["explain", str(folder), str(audio), "--out", str(tmp_path / "e.png"), "--point", "0",
                 "--point", "5", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert all([p["index"] for p in b["points"]] == [0, 5] for b in result["blocks"].values())


def test_point_outside_the_clip_is_a_clear_error(saved, tmp_path, capsys):
    _, folder, audio = saved
    assert main(["explain", str(folder), str(audio), "--out", str(tmp_path / "e.png"), "--point", "999"]) != 0
    err = capsys.readouterr().err
    assert "point 999 is outside the clip" in err and "indices 0.." in err
    assert not (tmp_path / "e.png").exists()


def test_model_without_relation_blocks_is_refused(tmp_path, capsys):
    model = tiny_model("resnet18-3d")
    model.save_pretrained(tmp_path / "plain")
    write_audio(tmp_path / "c.wav", torch.zeros(2, 16000), 8000)
    assert main(["explain", str(tmp_path / "plain"), str(tmp_path / "c.wav"), "--out", str(tmp_path / "e.png")]) != 0
    assert "no relation blocks" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tresn-net-resnet18", "atresn-net-convnext-atto"])
def test_other_aggregators_and_backbones(name):
    """Max pooling reports each neighbour's share of the channels; a timm backbone works the same way."""
    from asczoo.analysis.explain import explain

    model = tiny_model(name)
    features = torch.randn(*model.input_shape, generator=torch.Generator().manual_seed(4))
    result = explain(model, features, top=2)
    expected = block_knn(model, features)
    for placement, block in result["blocks"].items():
        for point in block["points"]:
            assert [nb["index"] for nb in point["neighbours"]] == expected[placement][point["index"]].tolist()
            assert sum(nb["weight"] for nb in point["neighbours"]) == pytest.approx(1.0, abs=1e-5)
    if name.startswith("tresn"):
        assert all(b["weights"].startswith("max pooling") for b in result["blocks"].values())
