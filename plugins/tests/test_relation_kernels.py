"""The hand-written training passes of the relation layers against plain PyTorch modules.

:class:`FoldedLinearNorm` (batch norm folded into the linear map) and :class:`LinearNormAttentiveSum`
(the pair encoder's last layer fused with attentive pooling, in row blocks) must compute what
``relu(BatchNorm1d(Linear(x)))`` and softmax pooling compute: outputs, every gradient, the running
statistics. And they must run exactly when they may: in eager training, not under ``no_grad``,
evaluation, autocast or a batch-norm-intercepting mode.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from asczoo_plugins.relation import aggregators, layers
from asczoo_plugins.relation.aggregators import AttentivePool, LinearNormAttentiveSum
from asczoo_plugins.relation.layers import FoldedLinearNorm, LinearNorm
from relation_fixtures import randomise


class PlainLinearNorm(nn.Module):
    """The reference: torch's own Linear, BatchNorm1d and ReLU, weights copied from a LinearNorm."""

    def __init__(self, layer: LinearNorm) -> None:
        super().__init__()
        self.linear = copy.deepcopy(layer.linear)
        self.norm = nn.BatchNorm1d(layer.norm.num_features, momentum=layer.norm.momentum).to(layer.linear.weight.dtype)
        self.norm.load_state_dict(layer.norm.state_dict())
        self.relu = layer.relu

    def forward(self, x):
        y = self.norm(self.linear(x.reshape(-1, x.shape[-1])))
        return (torch.relu(y) if self.relu else y).view(*x.shape[:-1], -1)


def plain_attentive(e: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    return (torch.softmax(e @ score.t(), dim=2) * e).sum(dim=2)


def assert_same_grads(a: nn.Module, b: nn.Module, *, atol: float, rtol: float = 0.0) -> None:
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, atol=atol, rtol=rtol, msg=f"gradient of {name}")


def assert_same_buffers(a: nn.Module, b: nn.Module) -> None:
    buffers_b = dict(b.named_buffers())
    for name, buf in a.named_buffers():
        torch.testing.assert_close(buf, buffers_b[name], atol=1e-12, rtol=0, msg=f"buffer {name}")


def count_calls(monkeypatch, function: type[torch.autograd.Function]) -> list[int]:
    calls = [0]
    original = function.apply

    def apply(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(function, "apply", apply)
    return calls


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_folded_linear_norm_equals_linear_batch_norm_relu(monkeypatch, relu, momentum):
    calls = count_calls(monkeypatch, FoldedLinearNorm)
    torch.manual_seed(0)
    layer = LinearNorm(12, 20, relu=relu).double()
    layer.norm.momentum = momentum
    randomise(layer, seed=0)
    plain = PlainLinearNorm(layer)
    x = (torch.randn(3, 50, 4, 12, dtype=torch.float64) * 2 + 1).relu()  # post-ReLU inputs, mean far from 0
    for step in range(2):  # two steps: the running statistics and the momentum schedule move
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = layer(xa), plain(xb)
        grad = torch.randn_like(ya)
        ya.backward(grad)
        yb.backward(grad)
        torch.testing.assert_close(ya, yb, atol=1e-12, rtol=0)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=0)
        assert_same_grads(layer, plain, atol=1e-10)
        assert_same_buffers(layer.norm, plain.norm)
        layer.zero_grad(), plain.zero_grad()
    assert calls[0] == 2, "training with gradients must take the folded path"


def test_folded_linear_norm_skips_the_input_gradient_of_constant_inputs():
    layer = LinearNorm(10, 16).double()
    x = torch.rand(200, 10, dtype=torch.float64)  # positions: no gradient wanted
    layer(x).sum().backward()
    assert x.grad is None and layer.linear.weight.grad is not None


def test_folded_linear_norm_float32_agrees_with_plain_to_float32_rounding():
    torch.manual_seed(1)
    layer = LinearNorm(32, 64)
    randomise(layer, seed=0)
    plain = PlainLinearNorm(layer)
    x = (torch.randn(20000, 32) * 3 + 2).relu()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = layer(xa), plain(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(ya, yb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
    assert_same_grads(layer, plain, atol=1e-3, rtol=1e-4)


def test_evaluation_folds_running_statistics_into_one_matmul():
    torch.manual_seed(2)
    layer = LinearNorm(8, 6).double()
    randomise(layer, seed=0)
    plain = PlainLinearNorm(layer)
    layer.eval(), plain.eval()
    x = torch.randn(5, 7, 8, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), plain(x), atol=1e-12, rtol=0)
    layer(x).sum().backward()  # still differentiable (fine-tuning with frozen statistics)
    assert layer.linear.weight.grad is not None


def make_attentive(width: int, channels: int, *, project: bool, seed: int = 0):
    torch.manual_seed(seed)
    last = LinearNorm(width, channels).double()
    pool = AttentivePool(channels, project=project).double()
    randomise(last, seed=seed)
    randomise(pool, seed=seed + 1)
    return last, pool


@pytest.mark.parametrize("project", [True, False])
@pytest.mark.parametrize("block_elements", [1 << 19, 7 * 16])  # one block; blocks of 7 points, uneven tail
def test_fused_last_layer_and_attentive_pooling_equal_the_plain_ones(monkeypatch, project, block_elements):
    monkeypatch.setitem(layers.BLOCK_ELEMENTS, "cpu", block_elements)
    calls = count_calls(monkeypatch, LinearNormAttentiveSum)
    last, pool = make_attentive(6, 16, project=project)
    plain_last = PlainLinearNorm(last)
    plain_pool = copy.deepcopy(pool)
    x = (torch.randn(2, 23, 5, 6, dtype=torch.float64) + 0.5).relu()  # (B, P, k, C/4): 46 points
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = pool.pool_after(last, xa)
    e = plain_last(xb)
    b = plain_attentive(e, plain_pool.score.weight)
    b = b if plain_pool.project is None else plain_pool.project(b)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    assert calls[0] == 1
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=0)
    assert_same_grads(last, plain_last, atol=1e-10)
    assert_same_grads(pool, plain_pool, atol=1e-10)
    assert_same_buffers(last.norm, plain_last.norm)


def test_row_blocks_keep_whole_neighbourhoods_and_cover_every_row():
    blocks = layers.row_blocks(103, 10, torch.device("cpu"), multiple=4)
    assert blocks[0][0] == 0 and blocks[-1][1] == 103
    assert all(start % 4 == 0 and stop > start for start, stop in blocks)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert layers.row_blocks(8, 10**9, torch.device("cpu"), multiple=4) == [(0, 4), (4, 8)]


class Intercepting(TorchFunctionMode):
    """A torch-function mode like asczoo's multi-process GlobalBatchNorm."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("situation", ["no_grad", "eval", "autocast", "function_mode", "float16"])
def test_plain_path_runs_where_the_hand_written_passes_may_not(monkeypatch, situation):
    folded = count_calls(monkeypatch, FoldedLinearNorm)
    fused = count_calls(monkeypatch, LinearNormAttentiveSum)
    last, pool = make_attentive(4, 8, project=True)
    dtype = torch.float16 if situation == "float16" else torch.float32
    last, pool = last.to(dtype), pool.to(dtype)
    x = torch.rand(2, 6, 3, 4, dtype=dtype)
    if situation == "eval":
        last.eval(), pool.eval()
    contexts = {
        "no_grad": torch.no_grad(),
        "autocast": torch.autocast("cpu", dtype=torch.bfloat16),
        "function_mode": Intercepting(),
    }
    with contexts.get(situation, torch.enable_grad()):
        out = pool.pool_after(last, x)
    assert out.shape == (2, 6, 8)
    assert folded[0] == 0 and fused[0] == 0, f"hand-written passes ran under {situation}"


def test_training_takes_both_hand_written_paths_in_a_relation_block(monkeypatch):
    from asczoo import plugins

    folded = count_calls(monkeypatch, FoldedLinearNorm)
    fused = count_calls(monkeypatch, LinearNormAttentiveSum)
    block = plugins.get_part("relation_block", "atresn").factory(channels=16, k=3)
    block(torch.randn(2, 4, 16, 3, 2, requires_grad=True)).sum().backward()
    # gamma, the projection and the output layer fold; the last pair layer fuses with the pooling
    assert folded[0] == 3 and fused[0] == 1
    assert aggregators.LinearNormAttentiveSum is LinearNormAttentiveSum


def test_float32_inputs_far_from_zero_take_the_plain_path_and_stay_accurate(monkeypatch):
    """Folded statistics subtract mean^2 from E[z^2]; with a channel 1000 standard deviations from 0,
    float32 rounding would swamp its variance, so the layer must run plain there (and fold again
    when it can)."""
    calls = count_calls(monkeypatch, FoldedLinearNorm)
    torch.manual_seed(3)
    layer = LinearNorm(8, 4, relu=False)
    plain = PlainLinearNorm(layer)
    x = torch.randn(5000, 8) + 1000.0
    assert layers.fold_batch_norm(x, layer.linear.weight, layer.norm.weight, 1e-5) is None
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = layer(xa), plain(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    assert calls[0] == 0
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    assert_same_grads(layer, plain, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(layer.norm.running_var, plain.norm.running_var)
    layer(torch.randn(5000, 8))  # centred input folds
    assert calls[0] == 1


def test_a_block_hands_its_last_pair_layer_to_an_aggregator_that_can_fuse_it():
    from asczoo import plugins
    from asczoo_plugins.relation.aggregators import MeanPool

    class FusingMean(MeanPool):
        calls = 0

        def pool_after(self, layer, x):
            FusingMean.calls += 1
            assert isinstance(layer, LinearNorm) and x.shape[-1] == layer.linear.in_features
            return self(layer(x))

    torch.manual_seed(4)
    block = plugins.get_part("relation_block", "tresn").factory(channels=16, k=3, aggregator="mean")
    randomise(block, seed=4)
    x = torch.randn(2, 4, 16, 3, 2)
    expected = block(x)
    block.aggregator = FusingMean()
    torch.testing.assert_close(block(x), expected, atol=0, rtol=0)
    assert FusingMean.calls == 1
