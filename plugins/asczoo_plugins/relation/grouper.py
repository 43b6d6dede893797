"""The semantic neighbourhood grouper (SNG, paper section 2.1).

For every point it picks the ``k`` most similar points of the same sample, by squared L2 distance or
cosine distance (:func:`asczoo.ops.semantic_knn`). With ``exclude_same_segment`` (the paper and the
authors' code) the neighbours come from other segments only, so every relation the block encodes is
one between segments; without it, any point but the centre itself qualifies.

``shrink`` (the authors' code, used at stage 2 there): the block runs on a feature map bilinearly
downsampled by 2 in F and T (for even sizes exactly a 2x2 average), and its output is bilinearly
upsampled back before the residual addition. With the authors' 3x3 stride-1 stem, stage 2 has four
times the points of the paper's Table 1, and the ``P x P`` distance matrix sixteen times the size;
shrinking brings both back.

``precision`` (the blocks' ``grouper_precision``) is what the distances are computed in.
``"float32"`` (the default) casts the points to float32 first and computes in IEEE float32 whatever
the TF32 setting: the ``|x|^2 + |y|^2 - 2 x.y`` form cancels most significant bits in half precision,
and the neighbour sets are then those of the features as they are. ``"input"`` keeps the points'
dtype: under bf16 autocast the distances are bf16 matmuls (cheaper, coarser: other neighbour sets).
Under bf16 autocast the features themselves are bf16 either way (14 to 89 % of neighbour sets differ
from a float32 run); comparing ``engine.precision: fp32`` and ``bf16`` runs, and the two settings
here, is how to tell whether that costs accuracy on a dataset.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from asczoo.ops import DISTANCES, PRECISIONS, semantic_knn

Distance = Literal["l2", "cosine"]
Precision = Literal["float32", "input"]


#: the most neighbours a point may gather: the index and gathered tensors grow with k (the paper uses 4)
MAX_K = 1024


class SemanticGrouper(nn.Module):
    """``(points (B, P, C), segment_size) -> neighbour index (B, P, k)``; no parameters."""

    def __init__(
        self, *, k: int, distance: Distance = "l2", exclude_same_segment: bool = True, shrink: bool = False,
        precision: Precision = "float32",
    ) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an integer from 1 to {MAX_K} (MAX_K), got {k!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(map(repr, DISTANCES))}, got {distance!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"grouper_precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        self.k = k
        self.precision = precision
        self.distance = distance
        self.exclude_same_segment = exclude_same_segment
        self.shrink = shrink

    def forward(self, points: torch.Tensor, segment_size: int) -> torch.Tensor:
        return semantic_knn(
            points, self.k, distance=self.distance,
            segment_size=segment_size if self.exclude_same_segment else None, precision=self.precision,
        )

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, F, T)`` -> the map the block groups on: halved in F and T if ``shrink``."""
        if not self.shrink:
            return x
        b, n, c, f, t = x.shape
        y = F.interpolate(x.reshape(b * n, c, f, t), size=(max(1, f // 2), max(1, t // 2)),
                          mode="bilinear", align_corners=False)
        return y.view(b, n, c, *y.shape[-2:])

    def upsample(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The block's output ``(B, N, C, F', T')`` -> ``(B, N, C, *size)`` (bilinear if shrunk)."""
        if tuple(y.shape[-2:]) == tuple(size):
            return y
        b, n, c = y.shape[:3]
        z = F.interpolate(y.reshape(b * n, c, *y.shape[-2:]), size=size, mode="bilinear", align_corners=False)
        return z.view(b, n, c, *size)

    def extra_repr(self) -> str:
        return (f"k={self.k}, distance={self.distance!r}, exclude_same_segment={self.exclude_same_segment}, "
                f"shrink={self.shrink}, precision={self.precision!r}")
