"""Relation blocks against a plain float64 reference, zero-init identity, and pluggable parts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import asczoo
from relation_fixtures import randomise
from asczoo import plugins
from asczoo import RecipeError

# Each case: the block's options, and what the reference must compute for them.
CASES = {
    "atresn": dict(plugin="atresn", options={}, pos="augmented-mlp", agg="attentive"),
    "tresn": dict(plugin="tresn", options={}, pos="augmented-mlp", agg="max"),
    "senot": dict(plugin="senot", options={}, pos="relative", agg="max"),
    "atresn-cos": dict(plugin="atresn", options={"distance": "cosine"}, pos="augmented-mlp", agg="attentive"),
    "atresn-authors": dict(
        plugin="atresn", options={"shrink": True, "position_distance": "summed"}, pos="augmented-mlp", agg="attentive"
    ),
    "atresn-relpos": dict(plugin="atresn", options={"position_encoding": "relative"}, pos="relative", agg="attentive"),
    "atresn-augpos": dict(
        plugin="atresn", options={"position_encoding": "augmented"}, pos="augmented", agg="attentive"
    ),
    "tresn-mean-any-segment": dict(
        plugin="tresn", options={"aggregator": "mean", "exclude_same_segment": False, "position_encoding": "none"},
        pos="none", agg="mean",
    ),
    "atresn-no-projection": dict(
        plugin="atresn", options={"aggregator_options": {"project": False}}, pos="augmented-mlp", agg="attentive"
    ),
}


def make_block(case, channels=16, k=3):
    factory = plugins.get_part("relation_block", case["plugin"]).factory
    return factory(channels=channels, k=k, **case["options"])


# -- the reference: dense distances, explicit loops and concatenation, float64 --------------------

def batch_norm(h, bn, training):
    """Per channel (last axis), statistics over every other axis (all samples, points, neighbours)."""
    flat = h.reshape(-1, h.shape[-1])
    if training:
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def reference_block(x, block, case, k, training):
    opts = case["options"]
    distance = opts.get("distance", "l2")
    shrink = opts.get("shrink", False)
    exclude_segment = opts.get("exclude_same_segment", True)
    summed = opts.get("position_distance") == "summed"
    B, N, C, F0, T0 = x.shape
    g = x
    if shrink:
        g = F.interpolate(x.reshape(B * N, C, F0, T0), size=(F0 // 2, T0 // 2), mode="bilinear", align_corners=False)
        g = g.reshape(B, N, C, F0 // 2, T0 // 2)
    Fs, Ts = g.shape[-2:]
    # points, positions and segments, one by one in segment-major order
    feats, pos, seg = [], [], []
    for n in range(N):
        for f in range(Fs):
            for t in range(Ts):
                feats.append(g[:, n, :, f, t])
                pos.append([n / N, f / Fs, t / Ts])
                seg.append(n)
    feats = torch.stack(feats, dim=1)  # (B, P, C)
    pos = torch.tensor(pos, dtype=torch.float64)
    P = len(seg)
    # neighbours: every admissible candidate's distance, sorted
    nbr = torch.empty(B, P, k, dtype=torch.long)
    for b in range(B):
        for i in range(P):
            scored = []
            for j in range(P):
                if (exclude_segment and seg[j] == seg[i]) or j == i:
                    continue
                a, c = feats[b, i], feats[b, j]
                d = ((a - c) ** 2).sum() if distance == "l2" else 1 - (a @ c) / (a.norm() * c.norm())
                scored.append((float(d), j))
            nbr[b, i] = torch.tensor([j for _, j in sorted(scored)[:k]])
    # pair inputs, concatenated explicitly
    rows = []
    for b in range(B):
        for i in range(P):
            for s in range(k):
                j = int(nbr[b, i, s])
                pi, ps = pos[i], pos[j]
                if case["pos"] == "relative":
                    p = ps - pi
                elif case["pos"] in ("augmented", "augmented-mlp"):
                    d = (ps - pi).sum() if summed else torch.sqrt(((ps - pi) ** 2).sum())
                    p = torch.cat([d.view(1), ps - pi, pi, ps])
                else:
                    p = pos.new_zeros(0)
                rows.append((feats[b, i], feats[b, j], p))
    pe = torch.stack([r[2] for r in rows]).view(B, P, k, -1)
    if case["pos"] == "augmented-mlp":
        gamma = block.position_encoding.gamma
        pe = torch.relu(batch_norm(pe @ gamma.linear.weight.T, gamma.norm, training))
    concat = torch.cat([torch.stack([r[0] for r in rows]).view(B, P, k, C),
                        torch.stack([r[1] for r in rows]).view(B, P, k, C), pe], dim=-1)
    pair = block.pair
    w1 = torch.cat([pair.centre.weight, pair.neighbour.weight]
                   + ([pair.position.weight] if pair.position is not None else []), dim=1)
    assert w1.shape == (C // 4, 2 * C + pe.shape[-1])
    e = torch.relu(batch_norm(concat @ w1.T, pair.norm, training))
    for layer in pair.layers:
        e = torch.relu(batch_norm(e @ layer.linear.weight.T, layer.norm, training))
    if case["agg"] == "max":
        a = e.max(dim=2).values
    elif case["agg"] == "mean":
        a = e.sum(dim=2) / k
    else:
        agg = block.aggregator
        scores = e @ agg.score.weight.T
        w = torch.exp(scores) / torch.exp(scores).sum(dim=2, keepdim=True)
        a = (w * e).sum(dim=2)
        if agg.project is not None:
            a = torch.relu(batch_norm(a @ agg.project.linear.weight.T, agg.project.norm, training))
    out = batch_norm(a @ block.output.linear.weight.T, block.output.norm, training)  # (B, P, C)
    r = torch.zeros(B, N, C, Fs, Ts, dtype=torch.float64)
    for i in range(P):
        n, rest = divmod(i, Fs * Ts)
        f, t = divmod(rest, Ts)
        r[:, n, :, f, t] = out[:, i]
    if shrink:
        r = F.interpolate(r.reshape(B * N, C, Fs, Ts), size=(F0, T0), mode="bilinear", align_corners=False)
        r = r.reshape(B, N, C, F0, T0)
    return x + r


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_block_matches_float64_reference(name, training):
    case = CASES[name]
    torch.manual_seed(10)
    block = make_block(case).double()
    randomise(block, seed=11)
    block.train(training)
    x = torch.randn(2, 3, 16, 4, 4, dtype=torch.float64)  # B=2, N=3, C=16, F=T=4
    got = block(x)
    with torch.no_grad():
        expected = reference_block(x, block, case, k=3, training=training)
    assert (got - x).abs().max() > 1e-2, "the relation output should not be zero with random weights"
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_fresh_block_is_the_identity_bit_for_bit(name):
    torch.manual_seed(12)
    block = make_block(CASES[name])
    x = torch.randn(2, 3, 16, 4, 4)
    for training in (True, False):
        block.train(training)
        assert torch.equal(block(x), x)
    # ... yet it can learn: the output scale receives a gradient.
    block.train()
    (block(x) * torch.randn_like(x)).sum().backward()
    assert block.output.norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["atresn", "senot", "atresn-authors"])
def test_block_gradients_match_finite_differences(name):
    """The split first layer, the gathers and the in-place sums have correct gradients."""
    torch.manual_seed(15)
    block = make_block(CASES[name], channels=8, k=2).double()
    randomise(block, seed=16)
    x = torch.randn(1, 3, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-5)


def test_block_runs_under_bf16_autocast():
    block = make_block(CASES["atresn"])
    randomise(block, seed=13)
    x = torch.randn(2, 3, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_describe_reports_placement_relevant_facts():
    block = make_block(CASES["atresn-authors"], channels=128, k=4)
    info = block.describe()
    assert info["k"] == 4 and info["distance"] == "l2" and info["shrink"] is True
    assert info["aggregator"] == "attentive" and info["position_encoding"] == "augmented-mlp"
    assert info["position_distance"] == "summed"
    assert info["pair_widths"] == [32, 64]
    assert info["params"] == sum(p.numel() for p in block.parameters())
    # gamma 10*16 + 2*16, first pair layer (2*128 + 16)*32 + 2*32, second 32*64 + 2*64,
    # attentive score 64*64, projection 64*64 + 2*64, output 64*128 + 2*128
    assert info["params"] == 192 + 8768 + 2176 + 4096 + 4224 + 8448


def test_invalid_options_are_reported():
    atresn = plugins.get_part("relation_block", "atresn").factory
    with pytest.raises(plugins.UnknownPartError, match="no aggregator named 'softest'"):
        atresn(channels=16, aggregator="softest")
    with pytest.raises(RecipeError, match="unknown key 'temperature'"):
        atresn(channels=16, aggregator_options={"temperature": 2.0})
    with pytest.raises(ValueError, match="has no distance term"):
        atresn(channels=16, position_encoding="relative", position_distance="summed")
    with pytest.raises(ValueError, match="only 2 candidates"):
        atresn(channels=16, k=3)(torch.randn(1, 2, 16, 1, 2))


def test_pair_encoder_is_split_into_per_part_maps():
    """The first pair layer is three per-part maps (centre, neighbour, position), not one over a
    concatenation, so no (B, P, k, 2C + D) input is ever built."""
    block = make_block(CASES["atresn"], channels=16)
    assert block.pair.centre.in_features == 16 and block.pair.neighbour.in_features == 16


class LogSumExpPlugin:
    """A third-party plugin adding one aggregator: a temperature-scaled log-sum-exp over neighbours."""

    @asczoo.hookimpl
    def asczoo_register_aggregators(self, register):
        def logsumexp(*, channels: int, temperature: float = 1.0):
            """Soft maximum over the neighbours."""
            return LogSumExp(temperature)

        register("test-logsumexp", logsumexp)


class LogSumExp(torch.nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, e):
        return self.temperature * torch.logsumexp(e / self.temperature, dim=2) - self.temperature * math.log(e.shape[2])


def test_third_party_aggregator_plugs_into_every_preset():
    assert plugins.register_plugin(LogSumExpPlugin(), "test-lse")
    try:
        for preset in ("atresn", "tresn", "senot"):
            factory = plugins.get_part("relation_block", preset).factory
            block = factory(channels=16, k=2, aggregator="test-logsumexp", aggregator_options={"temperature": 0.5})
            assert isinstance(block.aggregator, LogSumExp) and block.aggregator.temperature == 0.5
            assert block.describe()["aggregator"] == "test-logsumexp"
            randomise(block, seed=14)
            x = torch.randn(2, 3, 16, 2, 2)
            assert block(x).shape == x.shape
    finally:
        plugins.unregister_plugin("test-lse")
    with pytest.raises(plugins.UnknownPartError):
        plugins.get_part("aggregator", "test-logsumexp")
