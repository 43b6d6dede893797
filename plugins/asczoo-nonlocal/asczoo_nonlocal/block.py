"""The non-local block (Wang et al., CVPR 2018, "embedded Gaussian" form) over a clip's points.

Where an ATReSN block relates each point to its k most similar points in other segments, a non-local
block relates it to every point of the clip: with the ``P = N * F * T`` points ``x_j`` of a feature map
``(B, N, C, F, T)``,

    y_i = sum_j softmax_j(theta(x_i) . phi(x_j) / sqrt(d)) g(x_j)
    z_i = x_i + BN(W y_i)

``theta``, ``phi`` and ``g`` are linear maps C -> C / ``reduction`` (split into ``heads`` heads of
width d), ``W`` maps back to C and the batch norm's scale starts at zero, so a fresh block is the
identity and a network with blocks starts as the plain 3D ResNet. ``exclude_same_segment`` masks
the pairs within a segment, as the paper's grouper does, so that every relation crosses segments.

Memory grows with P^2 per head (P = 1280 at stage 2 of ResNet-18 for a 10 s clip); the attention uses
``torch.nn.functional.scaled_dot_product_attention``, which avoids materialising it where it can.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asczoo.ops import from_points, to_points


class NonLocalBlock(nn.Module):
    """``X (B, N, C, F, T) -> X + BN(W attention(X))``, attention over all points of each clip."""

    def __init__(self, channels: int, *, inner_channels: int, heads: int, exclude_same_segment: bool) -> None:
        super().__init__()
        self.channels = channels
        self.inner_channels = inner_channels
        self.heads = heads
        self.exclude_same_segment = exclude_same_segment
        self.qkv = nn.Linear(channels, 3 * inner_channels)  # theta, phi, g in one matrix product
        self.out = nn.Linear(inner_channels, channels, bias=False)  # W
        self.norm = nn.BatchNorm1d(channels)
        nn.init.zeros_(self.norm.weight)  # a fresh block adds exactly zero

    def relation(self, x: torch.Tensor) -> torch.Tensor:
        """The term the block adds to ``x``, as a ``(B, N, C, F, T)`` map."""
        if x.dim() != 5 or x.shape[2] != self.channels:
            raise ValueError(
                f"non-local block for {self.channels} channels expects (B, N, {self.channels}, F, T), "
                f"got shape {tuple(x.shape)}"
            )
        b, n, _, f, t = x.shape
        if self.exclude_same_segment and n < 2:
            raise ValueError("exclude_same_segment needs at least 2 segments: with one, a point has no partner")
        points = to_points(x)  # (B, P, C)
        p = points.shape[1]
        q, k, v = self.qkv(points).view(b, p, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, P, d)
        mask = None
        if self.exclude_same_segment:
            segment = torch.arange(n, device=x.device).repeat_interleave(f * t)
            mask = segment[:, None] != segment[None, :]  # (P, P): True where attention is allowed
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, P, d)
        y = self.out(y.transpose(1, 2).reshape(b, p, self.inner_channels))  # (B, P, C)
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)  # batch norm per channel over all points
        return from_points(y, (n, f, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relation(x)

    def describe(self) -> dict[str, Any]:
        """What ``asczoo info`` shows for this block."""
        return {
            "block": "nonlocal",
            "inner_channels": self.inner_channels,
            "heads": self.heads,
            "exclude_same_segment": self.exclude_same_segment,
            "params": sum(p.numel() for p in self.parameters()),
        }


def non_local(
    *, channels: int, reduction: int = 2, heads: int = 1, exclude_same_segment: bool = False
) -> NonLocalBlock:
    """Non-local block: self-attention over all N*F*T points of a clip, zero-initialised output (Wang et al. 2018)."""
    if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
        raise ValueError(f"nonlocal: reduction must be a positive integer, got {reduction!r}")
    inner = channels // reduction
    if inner < 1:
        raise ValueError(f"nonlocal: channels={channels} // reduction={reduction} leaves no inner channels")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or inner % heads:
        raise ValueError(f"nonlocal: heads must be a positive divisor of the inner width {inner}, got {heads!r}")
    return NonLocalBlock(channels, inner_channels=inner, heads=heads, exclude_same_segment=exclude_same_segment)
