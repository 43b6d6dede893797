"""The pair-wise temporal relation encoder (PaTRE, paper eq. 2): ``e = f([x_i, x_s, pos])``.

``f`` is a shared MLP, 1x1 conv + batch norm + ReLU per layer, of widths C/4 and C/2 by default
(docs/method.md section 5: the authors' code ends at C/2 and lifts to C in the block's output layer).

Its first layer applied to the concatenation equals ``W_i x_i + W_s x_s + W_p pos``. ``W_i x_i`` and
``W_s x_s`` depend on one point only, so they are computed once per point ``(B, P, C/4)`` and the
neighbour part is gathered, instead of building the ``(B, P, k, 2C + D)`` concatenation and
multiplying it: k times fewer multiply-adds on the feature part, and no ``(B, P, k, C)`` copy of the
neighbour features. ``first_layer_weight()`` returns the equivalent weight of the concatenation.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from asczoo.ops import gather_neighbours
from asczoo_plugins.relation.layers import ChannelNorm, LinearNorm


class PairEncoder(nn.Module):
    """``(x (B, P, C), index (B, P, k), pos (B, P, k, D)) -> e (B, P, k, widths[-1])``."""

    def __init__(self, channels: int, position_dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"PairEncoder widths must be positive, got {list(widths)}")
        first = widths[0]
        self.centre = nn.Linear(channels, first, bias=False)  # W_i
        self.neighbour = nn.Linear(channels, first, bias=False)  # W_s
        self.position = nn.Linear(position_dim, first, bias=False) if position_dim else None  # W_p
        self.norm = ChannelNorm(first)
        self.layers = nn.Sequential(*(LinearNorm(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.out_dim = widths[-1]

    def first_layer_weight(self) -> torch.Tensor:
        """The first layer's weight on the concatenation ``[x_i, x_s, pos]``: ``(C/4, 2C + D)``."""
        parts = [self.centre.weight, self.neighbour.weight]
        if self.position is not None:
            parts.append(self.position.weight)
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, index: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.layers(self.hidden(x, index, pos))

    def hidden(self, x: torch.Tensor, index: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The first layer's output ``(B, P, k, widths[0])``: what :attr:`layers` then map."""
        b, p, k = index.shape
        first = self.norm.num_features
        # W_s x and W_i x for every point from one matmul, then out-of-place sums on 2-D tensors:
        # in-place ops on views of autograd tensors make autograd copy whole gradients back
        maps = (x.reshape(b * p, -1) @ torch.cat([self.neighbour.weight, self.centre.weight]).t()).view(b, p, 2 * first)
        h = gather_neighbours(maps[..., :first], index).view(b * p * k, first)
        if self.position is not None:
            h = torch.addmm(h, pos.reshape(b * p * k, -1), self.position.weight.t())
        h = (h.view(b * p, k, first) + maps[..., first:].reshape(b * p, 1, first)).view(b * p * k, first)
        # ReLU in place on batch norm's own output, not on a view of it
        return nn.BatchNorm1d.forward(self.norm, h).relu_().view(b, p, k, first)
