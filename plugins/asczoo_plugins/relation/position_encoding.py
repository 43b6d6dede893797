"""Position encodings of a (centre, neighbour) pair, for the pair-wise relation encoder.

Positions are ``p = (n / N, f / F, t / T)`` (:func:`asczoo.ops.point_positions`). Each encoding maps
the centre positions ``(B or 1, P, 1, 3)`` and the neighbour positions ``(B, P, k, 3)`` to
``(B, P, k, out_dim)``:

* ``none``: nothing (``out_dim = 0``); the relation is encoded from features alone.
* ``relative``: ``p_s - p_i`` (3 values), raw: SeNoT-Net, and the paper's Table 2 "relative
  positions".
* ``augmented``: ``[d(p_i, p_s), p_s - p_i, p_i, p_s]`` (10 values), raw: Table 2 "augmented
  positions" (without the MLP gamma).
* ``augmented-mlp``: the same 10 values through gamma, a shared 1x1 conv 10 -> 16 with batch norm and
  ReLU: ATReSN (paper eq. 1).

``d`` is the Euclidean distance (the paper, ``distance="euclidean"``) or the signed sum of the three
differences (the authors' code, ``distance="summed"``); the latter is a fixed linear combination of
``p_s - p_i``, so it adds no information but changes the function the MLP starts from.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from asczoo_plugins.relation.layers import LinearNorm

PositionDistance = Literal["euclidean", "summed"]


class NoPosition(nn.Module):
    """No position input: an empty ``(B, P, k, 0)`` encoding."""

    out_dim = 0

    def forward(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        return neighbour.new_zeros(*neighbour.shape[:-1], 0)


class RelativePosition(nn.Module):
    """``p_s - p_i``: the neighbour's displacement from its centre (3 values)."""

    out_dim = 3

    def forward(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        return neighbour - centre


#: the widest position MLP (checked before its layers are allocated; the paper's gamma is 16 wide, and the
#: pair encoder's input grows with it at every point and neighbour)
MAX_WIDTH = 4096


class AugmentedPosition(nn.Module):
    """``[d(p_i, p_s), p_s - p_i, p_i, p_s]`` (10 values), optionally through the MLP gamma."""

    def __init__(self, *, distance: PositionDistance = "euclidean", mlp_width: int | None = None) -> None:
        super().__init__()
        if mlp_width is not None and (isinstance(mlp_width, bool) or not isinstance(mlp_width, int)
                                      or not 1 <= mlp_width <= MAX_WIDTH):
            raise ValueError(f"position encoding: mlp_width must be an integer from 1 to {MAX_WIDTH} (MAX_WIDTH), "
                             f"got {mlp_width!r}")
        if distance not in ("euclidean", "summed"):
            raise ValueError(f"position distance must be 'euclidean' or 'summed', got {distance!r}")
        self.distance = distance
        self.gamma = LinearNorm(10, mlp_width) if mlp_width else None
        self.out_dim = mlp_width or 10

    def forward(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        delta = neighbour - centre
        if self.distance == "euclidean":
            d = delta.pow(2).sum(-1, keepdim=True).sqrt()
        else:
            d = delta.sum(-1, keepdim=True)
        raw = torch.cat([d, delta, centre.expand_as(neighbour), neighbour], dim=-1)
        return raw if self.gamma is None else self.gamma(raw)


def no_position() -> NoPosition:
    """No position input (the relation is encoded from features alone)."""
    return NoPosition()


def relative_position() -> RelativePosition:
    """Raw relative position p_s - p_i, 3 values (SeNoT-Net; paper Table 2 'relative positions')."""
    return RelativePosition()


def augmented_position(*, distance: PositionDistance = "euclidean") -> AugmentedPosition:
    """Raw augmented position [d, p_s - p_i, p_i, p_s], 10 values (paper Table 2, without gamma)."""
    return AugmentedPosition(distance=distance)


def augmented_position_mlp(*, distance: PositionDistance = "euclidean", width: int = 16) -> AugmentedPosition:
    """Augmented position through the MLP gamma, 10 -> 16 with batch norm and ReLU (ATReSN, eq. 1)."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"augmented-mlp: width must be an integer from 1 to {MAX_WIDTH} (MAX_WIDTH), got {width!r}")
    return AugmentedPosition(distance=distance, mlp_width=width)
