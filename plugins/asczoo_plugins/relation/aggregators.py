"""Neighbourhood aggregators: pair embeddings ``(B, P, k, C)`` -> point embeddings ``(B, P, C)``.

* ``max``: channel-wise maximum over the k neighbours (TReSN, SeNoT-Net).
* ``mean``: channel-wise average over the k neighbours.
* ``attentive``: the paper's attentive pooling (eqs. 3-4): scores ``g(e)`` with ``g`` a linear map
  C -> C without bias, a softmax over the k neighbours per channel, and the weighted sum of the
  embeddings; then (the authors' code, ``project=True``) a 1x1 conv C -> C, batch norm, ReLU.

A third-party aggregator registers through ``asczoo_register_aggregators`` with a factory
``(*, channels, **options) -> nn.Module`` and is picked by name in a recipe's ``relation`` section
(``aggregator: NAME``, options in ``aggregator_options``). It may also define
``pool_after(layer, x)``, meaning ``self(layer(x))`` for the pair encoder's last layer, to fuse the
two (attentive pooling does, so the pair embeddings never exist at full size in training).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from asczoo.interfaces import Aggregator
from asczoo_plugins.relation.layers import (
    LinearNorm, fold_gradients, row_blocks, training_fold,
)


class MaxPool(Aggregator):
    """Channel-wise maximum over the neighbours."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e.amax(dim=2)


class MeanPool(Aggregator):
    """Channel-wise average over the neighbours."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e.mean(dim=2)


class LinearNormAttentiveSum(torch.autograd.Function):
    """``a = sum_s softmax_s(e_s G^T) * e_s`` with ``e = relu(batch_norm(x W^T))``, in training mode.

    The pair encoder's last layer and attentive pooling in one pass over row blocks of whole
    neighbourhoods (:func:`~asczoo_plugins.relation.layers.row_blocks`): batch norm is folded into
    the layer (:func:`~asczoo_plugins.relation.layers.fold_batch_norm`: its statistics come from
    ``x``), so each block's ``e``, scores and weights are built, used and dropped while they are
    small, and nothing of the pair tensors' size is kept for the backward pass but ``x``, which the
    previous layer keeps anyway. The backward pass rebuilds them per block and applies, with
    ``u = w * da``: the softmax's backward ``ds = u * (e - a)`` (the derivative of ``a`` in ``w_s``
    is ``e_s``), ``de = u + ds G``, ``dG = ds^T e``, the ReLU's mask, and the folded layer's
    gradients (:func:`~asczoo_plugins.relation.layers.fold_gradients`).
    """

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, fold, score, k):
        folded, shift = fold.weight(weight).t(), fold.shift(beta, x.dtype)
        out = weight.shape[0]
        a = x.new_empty(x.shape[0] // k, out)
        for r0, r1 in row_blocks(x.shape[0], out, x.device, multiple=k):
            e = torch.addmm(shift, x[r0:r1], folded).relu_().view(-1, k, out)
            scores = (e.view(-1, out) @ score.t()).view(e.shape)
            w = torch.softmax(scores, dim=1)
            torch.sum(torch.mul(w, e, out=scores), dim=1, out=a[r0 // k:r1 // k])
        ctx.fold, ctx.k = fold, k
        ctx.save_for_backward(x, weight, gamma, beta, score, a)
        return a

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, gamma, beta, score, a = ctx.saved_tensors
        fold, k, out = ctx.fold, ctx.k, weight.shape[0]
        folded, shift = fold.weight(weight).t(), fold.shift(beta, x.dtype)
        g = torch.empty(x.shape[0], out, dtype=x.dtype, device=x.device)  # gradient at batch norm's output
        dbeta = torch.zeros(out, dtype=torch.float64, device=x.device)
        gx = torch.zeros(out, x.shape[1], dtype=torch.float64, device=x.device)
        dscore = torch.zeros_like(score)
        for r0, r1 in row_blocks(x.shape[0], out, x.device, multiple=k):
            e = torch.addmm(shift, x[r0:r1], folded).relu_()
            scores = (e @ score.t()).view(-1, k, out)
            u = torch.softmax(scores, dim=1).mul_(grad[r0 // k:r1 // k].unsqueeze(1))
            ds = torch.sub(e.view(-1, k, out), a[r0 // k:r1 // k].unsqueeze(1), out=scores).mul_(u).view(-1, out)
            dscore.addmm_(ds.t(), e)
            de = u.view(-1, out).addmm_(ds, score)
            block = torch.ops.aten.threshold_backward.grad_input(de, e, 0, grad_input=g[r0:r1])
            dbeta += block.sum(0).to(torch.float64)
            gx += (block.t() @ x[r0:r1]).to(torch.float64)
        dx, dweight, dgamma, dbeta = fold_gradients(fold, x, weight, gamma, g, dbeta, gx,
                                                    input_grad=ctx.needs_input_grad[0])
        return dx, dweight, dgamma, dbeta, None, dscore, None


class AttentivePool(Aggregator):
    """``a = sum_s softmax_s(g(e_s)) * e_s`` (per channel), then an optional 1x1 conv + BN + ReLU."""

    def __init__(self, channels: int, *, project: bool = True) -> None:
        super().__init__()
        self.score = nn.Linear(channels, channels, bias=False)  # g
        self.project = LinearNorm(channels, channels) if project else None

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        a = (torch.softmax(self.score(e), dim=2) * e).sum(dim=2)
        return a if self.project is None else self.project(a)

    def pool_after(self, layer: LinearNorm, x: torch.Tensor) -> torch.Tensor:
        """``self(layer(x))``; in training, as one blocked pass (:class:`LinearNormAttentiveSum`)
        when ``layer`` is a folding :class:`LinearNorm` with ReLU."""
        b, p, k, width = x.shape
        rows = x.reshape(-1, width)
        fold = training_fold(layer, rows) if isinstance(layer, LinearNorm) and layer.relu else None
        if fold is None:
            return self(layer(x))
        norm = layer.norm
        a = LinearNormAttentiveSum.apply(rows, layer.linear.weight, norm.weight, norm.bias, fold, self.score.weight, k)
        a = a.view(b, p, -1)
        return a if self.project is None else self.project(a)


def max_pool(*, channels: int) -> MaxPool:
    """Channel-wise maximum over the k neighbours (TReSN, SeNoT-Net)."""
    return MaxPool()


def mean_pool(*, channels: int) -> MeanPool:
    """Channel-wise average over the k neighbours."""
    return MeanPool()


def attentive_pool(*, channels: int, project: bool = True) -> AttentivePool:
    """Attentive pooling: softmax over neighbours of a bias-free linear score, weighted sum (ATReSN)."""
    return AttentivePool(channels, project=project)
