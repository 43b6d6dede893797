"""The shared building brick of relation blocks: a channel-last 1x1 layer with batch norm.

The authors' relation MLPs are 1x1 convolutions with batch norm and ReLU on point tensors
``(B, P, C)`` or pair tensors ``(B, P, k, C)``. A 1x1 convolution is a linear map on the last axis,
and their batch norm normalises each channel with statistics over every other axis: over all
samples and points, and for pair tensors over all neighbours too. :class:`ChannelNorm` is exactly
that, applied to channel-last tensors without moving the channels.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelNorm(nn.BatchNorm1d):
    """Batch norm over the last axis of a ``(..., C)`` tensor: per channel, statistics over all
    leading axes (samples, points, neighbours)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class LinearNorm(nn.Module):
    """``relu?(norm(x @ W.T))`` on the last axis: the authors' 1x1 conv + batch norm (+ ReLU).

    The linear map has no bias: the batch norm that follows removes any constant offset.
    """

    def __init__(self, in_features: int, out_features: int, *, relu: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.norm = ChannelNorm(out_features)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.linear(x))
        return y.relu_() if self.relu else y  # batch norm's backward needs its input, not its output
