"""Tests of the asczoo-nonlocal plugin: asczoo's conformance suite, the maths, and the installed plugin.

Run from this folder with ``python -m pytest -q`` after ``pip install -e .``.
"""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import pytest
import torch

try:  # the entry point, not just the importable folder, is what asczoo needs
    metadata.distribution("asczoo-nonlocal")
except metadata.PackageNotFoundError:
    pytest.skip("asczoo-nonlocal is not installed: pip install -e plugins/asczoo-nonlocal", allow_module_level=True)

import asczoo  # noqa: E402
from asczoo.plugins import get_part  # noqa: E402
from asczoo.testing import check_plugin_imports, check_relation_block, tiny_overrides  # noqa: E402
from asczoo_nonlocal import non_local  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1]


def test_conformance_with_onnx_export():
    report = check_relation_block("nonlocal", onnx=True)
    assert {"shapes", "zero_init", "gradients", "batch_independence", "in_model"} <= set(report.passed)


@pytest.mark.parametrize("options", [
    {"heads": 2, "reduction": 1},
    {"exclude_same_segment": True},
])
def test_conformance_of_the_options(options):
    check_relation_block("nonlocal", options=options)


def test_uses_public_asczoo_api_only():
    check_plugin_imports(PACKAGE / "asczoo_nonlocal")
    check_plugin_imports(PACKAGE / "tests")


def awake(block, seed=0):
    """Random weights everywhere, the zero-initialised output scale included, and random BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        block.norm.running_mean.copy_(torch.randn(block.channels, generator=gen) * 0.1)
        block.norm.running_var.copy_(torch.rand(block.channels, generator=gen) + 0.5)
    return block.eval()


def reference(block, x):
    """The non-local block written out with an explicit attention matrix, in float64."""
    b, n, c, f, t = x.shape
    pts = x.double().permute(0, 1, 3, 4, 2).reshape(b, n * f * t, c)
    w = block.qkv.weight.double()
    bias = block.qkv.bias.double()
    inner, heads = block.inner_channels, block.heads
    d = inner // heads
    theta, phi, g = (pts @ w[i * inner:(i + 1) * inner].T + bias[i * inner:(i + 1) * inner] for i in range(3))
    segment = torch.arange(n).repeat_interleave(f * t)
    outs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = theta[..., cols] @ phi[..., cols].transpose(1, 2) / math.sqrt(d)
        if block.exclude_same_segment:
            scores = scores.masked_fill(segment[:, None] == segment[None, :], float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ g[..., cols])
    y = torch.cat(outs, dim=-1) @ block.out.weight.double().T
    bn = block.norm
    y = (y - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps) * bn.weight.double() \
        + bn.bias.double()
    return x.double() + y.reshape(b, n, f, t, c).permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("options", [{}, {"heads": 2, "reduction": 1}, {"exclude_same_segment": True}])
def test_matches_an_explicit_attention_matrix(options):
    block = awake(non_local(channels=8, **options))
    x = torch.randn(2, 3, 8, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(block(x).double(), reference(block, x), rtol=1e-4, atol=1e-5)


def test_every_point_sees_every_segment_unless_excluded():
    x = torch.randn(1, 3, 8, 2, 2)
    changed = x.clone()
    changed[0, 0, :, 1, 1] += 3.0  # one point of segment 0
    for exclude in (False, True):
        block = awake(non_local(channels=8, exclude_same_segment=exclude))
        with torch.no_grad():
            delta = (block.relation(changed) - block.relation(x)).abs()
        assert delta[0, 2].amax() > 1e-4, "a point of segment 2 must react to a point of segment 0"
        same_segment_others = delta[0, 0].amax(dim=0).flatten()[:3]  # the other 3 points of segment 0
        if exclude:
            assert same_segment_others.max() < 1e-6
        else:
            assert same_segment_others.max() > 1e-4


def test_options_are_validated():
    with pytest.raises(ValueError, match="heads"):
        non_local(channels=8, heads=3)
    with pytest.raises(ValueError, match="reduction"):
        non_local(channels=8, reduction=0)
    with pytest.raises(ValueError, match="2 segments"):
        non_local(channels=8, exclude_same_segment=True)(torch.randn(1, 1, 8, 2, 2))


def test_registered_through_the_entry_point():
    part = get_part("relation_block", "nonlocal")
    assert part.factory is non_local
    assert part.owner == "nonlocal"
    assert part.description.startswith("Non-local block")


def test_recipes_build_and_train():
    assert asczoo.list_models("nonlocal*") == ["nonlocal-net-resnet18", "nonlocal-net-resnet18-cross"]
    model = asczoo.create_model("nonlocal-net-resnet18-cross", num_classes=3, overrides=tiny_overrides())
    assert sorted(model.relations) == ["res2_1", "res2_2", "res3_1", "res3_2"]
    assert all(block.exclude_same_segment for block in model.relations.values())
    x = torch.randn(2, *model.input_shape)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()
    assert model.relations["res3_1"].norm.weight.grad.abs().sum() > 0
