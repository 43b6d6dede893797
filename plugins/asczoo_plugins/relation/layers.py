"""The shared building brick of relation blocks: a channel-last 1x1 layer with batch norm.

The authors' relation MLPs are 1x1 convolutions with batch norm and ReLU on point tensors
``(B, P, C)`` or pair tensors ``(B, P, k, C)``. A 1x1 convolution is a linear map on the last axis,
and their batch norm normalises each channel with statistics over every other axis: over all
samples and points, and for pair tensors over all neighbours too. :class:`ChannelNorm` is exactly
that, applied to channel-last tensors without moving the channels.

Speed. Pair tensors are k times the size of the feature map, and on a CPU the passes over them, and
the page faults of every fresh tensor of their size, cost more than the multiply-adds. So
:class:`LinearNorm` folds batch norm into its matrix multiply (:class:`FoldedLinearNorm`): the
statistics of ``z = x W^T`` follow from the column sums of ``x`` and the small ``x^T x``, so
``relu(bn(x W^T))`` is one ``addmm`` with folded weights and an in-place ReLU, and the backward pass
needs only ``x``, the output and two more small matrix products. Same function, gradients and
running statistics as ``relu(BatchNorm1d(Linear(x)))``; the tests check it against that in float64.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from asczoo.ops import ieee_float32


def fused_training(x: torch.Tensor) -> bool:
    """Whether the hand-written training passes of the relation layers may run on ``x``.

    Only in plain eager autograd on float32/float64: not while compiling, exporting or tracing
    (the plain operations there are what the compiler and exporter understand), not under autocast
    (mixed precision casts per operation, which the plain operations do), and not with a
    torch-function mode active (asczoo's multi-process :class:`~asczoo.engine.GlobalBatchNorm`
    intercepts ``F.batch_norm``, which only the plain path calls).
    """
    return (
        torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > 0
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._is_torch_function_mode_enabled()
    )


class ChannelNorm(nn.BatchNorm1d):
    """Batch norm over the last axis of a ``(..., C)`` tensor: per channel, statistics over all
    leading axes (samples, points, neighbours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


#: elements of one row block of the blocked passes (:func:`row_blocks`): a few MiB on the CPU, so a
#: block's temporaries are reused from the heap instead of faulting in fresh pages; more elsewhere
BLOCK_ELEMENTS = {"cpu": 1 << 19, "other": 1 << 24}


def row_blocks(rows: int, width: int, device: torch.device, *, multiple: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges covering ``rows`` rows of width ``width`` in blocks of about
    :data:`BLOCK_ELEMENTS` elements; every start is a multiple of ``multiple`` (whole groups of k
    neighbours stay in one block)."""
    budget = BLOCK_ELEMENTS["cpu" if device.type == "cpu" else "other"]
    step = max(multiple, budget // max(1, width) // multiple * multiple)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


#: a float32 channel folds only while ``E[z^2] <= FOLD_CONDITION * var(z)``, i.e. its batch mean is
#: within about 30 standard deviations of 0: the folded statistics subtract ``mean^2`` from ``E[z^2]``,
#: so float32 rounding (about 1e-7 of ``E[z^2]``) would otherwise be a visible part of the variance
FOLD_CONDITION = 1e3


class Fold(NamedTuple):
    """Training-mode batch norm of ``z = x W^T`` folded into the linear map (float64 statistics)."""

    rows: int
    mu: torch.Tensor  # (in,) column means of x
    second: torch.Tensor  # (in, in) x^T x / rows
    mean: torch.Tensor  # (out,) batch mean of z
    var: torch.Tensor  # (out,) batch variance of z, biased
    invstd: torch.Tensor  # (out,) 1 / sqrt(var + eps)
    scale: torch.Tensor  # (out,) gamma * invstd

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The folded weight ``scale * W``, ``(out, in)`` in ``weight``'s dtype."""
        return weight * self.scale.to(weight.dtype)[:, None]

    def shift(self, beta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The folded bias ``beta - scale * mean`` in ``dtype``."""
        return (beta.to(self.scale.dtype) - self.scale * self.mean).to(dtype)


#: devices where :func:`fold_batch_norm` may read a flag back to decide whether to fold (free on the
#: host); on an accelerator that read would wait for the device queue in every layer of every step,
#: so there the statistics come from centred rows instead (one more pass over ``x``, never refused)
HOST_DECISION_DEVICES = ("cpu",)


@torch.no_grad()
def fold_batch_norm(x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, eps: float) -> Fold | None:
    """Batch statistics of ``z = x W^T`` from ``x``'s column sums and ``x^T x`` (no pass over ``z``),
    or ``None`` where float32 rounding would spoil them (see :data:`FOLD_CONDITION`): then the
    caller runs the plain layer. On devices outside :data:`HOST_DECISION_DEVICES` the covariance
    comes from centred rows, which has no such cancellation, so it always folds (no host read).
    The products run in IEEE float32 whatever the TF32 setting (:func:`asczoo.ops.ieee_float32`)."""
    n, stats = x.shape[0], torch.float64
    w = weight.to(stats)
    with ieee_float32():
        mu = x.sum(0).to(stats) / n  # torch sums float32 in cascades: accurate, no float64 copy of x
        if x.dtype == torch.float64 or x.device.type in HOST_DECISION_DEVICES:
            second = (x.t() @ x).to(stats) / n
            cov = second - torch.outer(mu, mu)
            centred = False
        else:
            shift = mu.to(x.dtype)  # rows minus their (rounded) mean: E[(x - s)(x - s)^T] = cov + d d^T
            rows = x - shift
            d = mu - shift.to(stats)
            cov = (rows.t() @ rows).to(stats) / n - torch.outer(d, d)
            second = cov + torch.outer(mu, mu)
            centred = True
        mean = w @ mu
        var = ((w @ cov) * w).sum(1).clamp_(min=0.0)
    if not centred and x.dtype != torch.float64 and bool((mean * mean + var > FOLD_CONDITION * var).any()):
        return None
    invstd = (var + eps).rsqrt()
    return Fold(n, mu, second, mean, var, invstd, gamma.detach().to(stats) * invstd)


def update_running_stats(norm: nn.BatchNorm1d, fold: Fold) -> None:
    """Count a training step in ``norm`` and move its running statistics as ``BatchNorm1d`` does
    (momentum ``None``: cumulative average; the running variance is unbiased)."""
    norm.num_batches_tracked.add_(1)
    momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else float(norm.momentum)
    n = fold.rows
    with torch.no_grad():
        norm.running_mean.mul_(1.0 - momentum).add_(fold.mean.to(norm.running_mean.dtype), alpha=momentum)
        unbiased = fold.var * (n / max(n - 1, 1))
        norm.running_var.mul_(1.0 - momentum).add_(unbiased.to(norm.running_var.dtype), alpha=momentum)


def fold_gradients(fold: Fold, x, weight, gamma, g, dbeta, gx, *, input_grad: bool):
    """Gradients of a folded layer from ``g`` (the gradient at batch norm's output, after the ReLU's
    mask), its column sums ``dbeta`` and ``gx = g^T x`` (float64). With ``q = scale * invstd *
    sum(g * zhat) / n``: ``dz = scale g - q z + c`` for a per-channel constant ``c``, hence
    ``dx = g (scale W) - x (W^T q W) + c W`` and ``dW = scale gx - q (W x^T x) + c (sum x)^T``.
    Returns ``(dx or None, dW, dgamma, dbeta)``."""
    n, w = fold.rows, weight.to(torch.float64)
    dgamma = fold.invstd * ((gx * w).sum(1) - fold.mean * dbeta)  # sum of g * zhat
    q = fold.scale * fold.invstd * dgamma / n
    c = q * fold.mean - fold.scale * dbeta / n
    dx = None
    if input_grad:
        dx = torch.addmm((c @ w).to(x.dtype).expand(n, -1), g, (w * fold.scale[:, None]).to(x.dtype))
        dx.addmm_(x, (w.t() @ (q[:, None] * w)).to(x.dtype), alpha=-1.0)
    dweight = fold.scale[:, None] * gx - q[:, None] * (w @ fold.second) * n + c[:, None] * (fold.mu * n)[None, :]
    return dx, dweight.to(weight.dtype), dgamma.to(gamma.dtype), dbeta.to(gamma.dtype)


class FoldedLinearNorm(torch.autograd.Function):
    """``relu?(batch_norm(x @ W.T))`` in training mode, batch norm folded into one ``addmm``.

    With ``n`` rows, ``mu = sum(x) / n`` and ``S = x^T x``, the statistics of ``z = x W^T`` are
    ``mean = W mu`` and ``var = diag(W (S / n - mu mu^T) W^T)`` (biased, as batch norm normalises);
    then ``y = relu?(x (s W)^T + (beta - s mean))`` with ``s = gamma / sqrt(var + eps)``
    (:func:`fold_batch_norm`, computed by the caller, which also moves the running statistics).
    The backward pass (:func:`fold_gradients`) needs ``x``, the output
    (for the ReLU's mask) and small matrices: no tensor of ``z``'s size is kept or rebuilt.
    """

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, fold, relu):
        y = torch.addmm(fold.shift(beta, x.dtype), x, fold.weight(weight).t())
        if relu:
            y.relu_()
        ctx.fold, ctx.relu = fold, relu
        ctx.save_for_backward(x, y if relu else None, weight, gamma)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, y, weight, gamma = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad, y, 0) if ctx.relu else grad
        gx = (g.t() @ x).to(torch.float64)
        dx, dweight, dgamma, dbeta = fold_gradients(ctx.fold, x, weight, gamma, g, g.sum(0).to(torch.float64), gx,
                                                    input_grad=ctx.needs_input_grad[0])
        return dx, dweight, dgamma, dbeta, None, None


def training_fold(layer: "LinearNorm", x: torch.Tensor) -> Fold | None:
    """The folded batch norm of ``layer`` for training rows ``x``, its running statistics updated, or
    ``None`` if the plain layer must run: not a training-mode batch norm with affine parameters and
    running statistics, not :func:`fused_training` mode, or statistics that do not fold accurately."""
    norm = layer.norm
    if not (norm.training and norm.affine and norm.track_running_stats and fused_training(x)):
        return None
    fold = fold_batch_norm(x, layer.linear.weight, norm.weight, float(norm.eps))
    if fold is not None:
        update_running_stats(norm, fold)
    return fold


class LinearNorm(nn.Module):
    """``relu?(norm(x @ W.T))`` on the last axis: the authors' 1x1 conv + batch norm (+ ReLU).

    The linear map has no bias: the batch norm that follows removes any constant offset. In
    training (plain eager autograd, :func:`fused_training`) it runs as :class:`FoldedLinearNorm`;
    in evaluation the running statistics fold into the weight, one ``addmm``; otherwise (compiling,
    exporting, autocast, a batch-norm-intercepting mode) the plain modules run.
    """

    def __init__(self, in_features: int, out_features: int, *, relu: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.norm = ChannelNorm(out_features)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        norm = self.norm
        fold = training_fold(self, rows)
        if fold is not None:  # the ReLU is part of the folded pass
            y = FoldedLinearNorm.apply(rows, self.linear.weight, norm.weight, norm.bias, fold, self.relu)
        else:
            if not norm.training and norm.affine and norm.track_running_stats and rows.numel():
                scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
                y = torch.addmm(norm.bias - norm.running_mean * scale, rows, (self.linear.weight * scale[:, None]).t())
            else:
                y = nn.BatchNorm1d.forward(norm, self.linear(rows))
            if self.relu:  # in place on the layer's own 2-D output, not on a view of it (autograd would copy)
                y = y.relu_()
        return y.view(*x.shape[:-1], y.shape[-1])
