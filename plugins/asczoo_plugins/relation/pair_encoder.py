"""The pair-wise temporal relation encoder (PaTRE, paper eq. 2): ``e = f([x_i, x_s, pos])``.

``f`` is a shared MLP, 1x1 conv + batch norm + ReLU per layer, of widths C/4 and C/2 by default
(SPEC section 5: the authors' code ends at C/2 and lifts to C in the block's output layer).

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
        # in-place sums on the freshly gathered tensor: one (B, P, k, C/4) buffer, not three
        h = gather_neighbours(self.neighbour(x), index).add_(self.centre(x).unsqueeze(2))
        if self.position is not None:
            h = h.add_(self.position(pos))
        return self.layers(self.norm(h).relu_())
