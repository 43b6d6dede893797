"""Relation networks from the registry: zero-init identity, placement, overrides, pluggable parts."""

from __future__ import annotations

import pytest
import torch

import asczoo
from asczoo import plugins
from asczoo.recipes import model_recipes as recipes
from asczoo.testing import tiny_overrides

RELATION_MODELS = [
    name for name in asczoo.list_models() if (recipes.registry().get(name).resolved or {}).get("relation")
]

EXPECTED = {  # the relation presets of the registry (test_models checks that they are listed)
    "atresn-net-resnet18", "atresn-net-resnet18-cos", "atresn-net-preact18", "atresn-net-preact18-cos",
    "tresn-net-resnet18", "tresn-net-preact18", "senot-net-resnet18", "senot-net-preact18",
    "atresn-net-resnet18-relpos", "atresn-net-resnet18-augpos", "atresn-net-resnet18-authors",
}


def test_relation_presets_place_blocks_after_res2_and_res3():
    for name in EXPECTED:
        relation = recipes.registry().get(name).resolved["relation"]
        assert relation["placement"] == ["res2_1", "res2_2", "res3_1", "res3_2"]


def plain_twin(model, name):
    """The same recipe without relation blocks, carrying the relation model's other weights."""
    plain = asczoo.create_model(name, overrides=tiny_overrides(relation=None))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("relations.")}
    plain.load_state_dict(state, strict=True)
    return plain


@pytest.mark.parametrize("name", RELATION_MODELS)
def test_fresh_relation_model_equals_its_backbone_bit_for_bit(name):
    torch.manual_seed(0)
    model = asczoo.create_model(name, overrides=tiny_overrides())
    assert len(model.relations) >= 1
    plain = plain_twin(model, name)
    assert not plain.relations
    x = torch.randn(2, *model.input_shape)
    for training in (True, False):
        model.train(training)
        plain.train(training)
        with torch.no_grad():
            assert torch.equal(model.forward_features(x), plain.forward_features(x)), f"{name}, train={training}"


@pytest.mark.parametrize("name", ["atresn-net-resnet18", "senot-net-preact18", "atresn-net-resnet18-authors"])
def test_blocks_are_live_once_their_output_scale_moves(name):
    torch.manual_seed(1)
    model = asczoo.create_model(name, overrides=tiny_overrides()).eval()
    plain = plain_twin(model, name).eval()
    x = torch.randn(2, *model.input_shape)
    seen = {}

    def record(module, args, out):
        seen[module.placement] = out.shape

    for placement, block in model.relations.items():
        block.placement = placement
        block.register_forward_hook(record)
        with torch.no_grad():
            block.output.norm.weight.fill_(1.0)
    with torch.no_grad():
        assert not torch.allclose(model.forward_features(x), plain.forward_features(x))
    assert set(seen) == set(model.relations)
    for placement, shape in seen.items():  # each block sees (B, N, C, F, T) with its stage's width
        assert shape[:3] == (2, model.input_shape[0], model.backbone.block_channels(placement))
    # and the whole model trains: gradients reach every relation parameter that can receive one
    model.train()
    model(x).sum().backward()
    assert all(block.output.linear.weight.grad.abs().sum() > 0 for block in model.relations.values())


def test_authors_variant_places_blocks_like_the_authors_code():
    from asczoo.commands.info import stage_shapes

    model = asczoo.create_model("atresn-net-resnet18-authors", overrides=tiny_overrides())
    plain = asczoo.create_model("atresn-net-resnet18", overrides=tiny_overrides())
    # 3x3 stride-1 stem: stage outputs have twice the bands and frames of timm's stem
    authors_shapes, timm_shapes = dict(stage_shapes(model)), dict(stage_shapes(plain))
    assert authors_shapes["res2"][2:] == tuple(2 * s for s in timm_shapes["res2"][2:])
    assert set(model.relation_positions.values()) == {"before_final_activation"}
    shrink = {p: b.describe()["shrink"] for p, b in model.relations.items()}
    assert shrink == {"res2_1": True, "res2_2": True, "res3_1": False, "res3_2": False}
    assert all(b.describe()["position_distance"] == "summed" for b in model.relations.values())


def test_k_and_distance_are_an_override_away():
    model = asczoo.create_model("tresn-net-resnet18", overrides=tiny_overrides(relation={"k": 2, "distance": "cosine"}))
    assert {(b.describe()["k"], b.describe()["distance"]) for b in model.relations.values()} == {(2, "cosine")}
    with pytest.raises(asczoo.RecipeError, match="'k'"):
        asczoo.create_model("atresn-net-resnet18", overrides=tiny_overrides(relation={"k": "eight"}))
    with pytest.raises(asczoo.RecipeError, match="'distance'"):
        asczoo.create_model("atresn-net-resnet18", overrides=tiny_overrides(relation={"distance": "manhattan"}))


def test_info_shows_each_block():
    from asczoo.commands.info import describe

    info = describe(asczoo.create_model("atresn-net-resnet18-cos", overrides=tiny_overrides()))
    assert list(info["relations"]) == ["res2_1", "res2_2", "res3_1", "res3_2"]
    for placement, block in info["relations"].items():
        assert block["k"] == 4 and block["distance"] == "cosine" and block["aggregator"] == "attentive"
        assert block["params"] > 0 and block["position"] == "after_block"


class ThirdPartyParts:
    """What a third-party package would ship: one aggregator and one whole relation block."""

    @asczoo.hookimpl
    def asczoo_register_aggregators(self, register):
        def softmax_mean(*, channels: int, temperature: float = 1.0):
            """Neighbours weighted by a softmax of their own mean activation."""
            return SoftmaxMean(temperature)

        register("test-softmax-mean", softmax_mean)

    @asczoo.hookimpl
    def asczoo_register_relation_blocks(self, register):
        def gated(*, channels: int, k: int = 2):
            """Adds a learned, zero-initialised gate times the mean of the k nearest other-segment points."""
            return GatedNeighbourMean(channels, k)

        register("test-gated", gated)


class SoftmaxMean(torch.nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, e):
        w = torch.softmax(e.mean(-1, keepdim=True) / self.temperature, dim=2)
        return (w * e).sum(2)


class GatedNeighbourMean(torch.nn.Module):
    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.gate = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        from asczoo.ops import from_points, gather_neighbours, semantic_knn, to_points

        b, n, c, f, t = x.shape
        points = to_points(x)
        index = semantic_knn(points, self.k, segment_size=f * t)
        mean = gather_neighbours(points, index).mean(2)
        return x + from_points(mean * self.gate, (n, f, t))

    def describe(self):
        return {"block": "test-gated", "k": self.k, "distance": "l2", "params": self.gate.numel()}


def test_third_party_parts_are_used_by_recipes():
    assert plugins.register_plugin(ThirdPartyParts(), "test-third-party")
    asczoo.register_recipes({"models": {
        "test-softmax-net": {
            "extends": "atresn-net-resnet18",
            "relation": {"aggregator": "test-softmax-mean", "aggregator_options": {"temperature": 2.0}},
        },
        "test-gated-net": {
            "extends": "resnet18-3d",
            "relation": {"plugin": "test-gated", "k": 3, "placement": ["res2_2", "res3_1"]},
        },
    }})
    x = torch.randn(2, *asczoo.create_model("resnet18-3d", overrides=tiny_overrides()).input_shape)

    model = asczoo.create_model("test-softmax-net", overrides=tiny_overrides())
    for block in model.relations.values():
        assert isinstance(block.aggregator, SoftmaxMean) and block.aggregator.temperature == 2.0
        assert block.describe()["aggregator"] == "test-softmax-mean"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), plain_twin(model, "test-softmax-net").eval().forward_features(x))

    gated = asczoo.create_model("test-gated-net", overrides=tiny_overrides())
    assert list(gated.relations) == ["res2_2", "res3_1"]
    assert all(isinstance(b, GatedNeighbourMean) and b.k == 3 for b in gated.relations.values())
    assert gated(x).shape == (2, 10)
    with pytest.raises(asczoo.RecipeError, match="'temperature'"):
        hot = tiny_overrides(relation={"aggregator_options": {"temperature": "hot"}})
        asczoo.create_model("test-softmax-net", overrides=hot)
