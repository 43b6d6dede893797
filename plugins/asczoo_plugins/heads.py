"""Head plugins: ``avgpool-fc`` (the relation networks' head) and ``segment-mean`` (the baselines').

Both read a feature map ``(B, N, C, F, T)`` and own one linear layer named ``fc``, so a segment
model's head initialises a 3D model's head (``init_from``).

* ``avgpool-fc``: global average over (N, F, T), dropout (0.5 in the authors' code), linear.
* ``segment-mean``: each segment is classified on its own (average over F, T, dropout, linear) and
  the clip's logits are the mean of the segment logits: the paper's ResNet baselines and stage-1
  models. With a linear classifier this equals ``avgpool-fc`` without dropout; keeping it separate
  lets a model return per-segment logits (:meth:`SegmentMeanHead.segment_logits`).
"""

from __future__ import annotations

import torch
from torch import nn

from asczoo import hookimpl


class AvgPoolFCHead(nn.Module):
    """Global average pool over segments, frequency and time; dropout; linear."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features.mean(dim=(1, 3, 4))))


class SegmentMeanHead(nn.Module):
    """Classify every segment, then average the segment logits."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def segment_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, F, T)`` -> per-segment logits ``(B, N, num_classes)``."""
        return self.fc(self.dropout(features.mean(dim=(3, 4))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.segment_logits(features).mean(dim=1)


def _check(in_features: int, num_classes: int, dropout: float, name: str) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be positive, got {num_classes}")


def avgpool_fc(*, in_features: int, num_classes: int, dropout: float = 0.5) -> AvgPoolFCHead:
    """Global average over (N, F, T), dropout, linear (the ATReSN-Net head)."""
    _check(in_features, num_classes, dropout, "avgpool-fc")
    return AvgPoolFCHead(in_features, num_classes, dropout)


def segment_mean(*, in_features: int, num_classes: int, dropout: float = 0.0) -> SegmentMeanHead:
    """Per-segment classifier; the clip's logits are the mean of the segment logits (baselines)."""
    _check(in_features, num_classes, dropout, "segment-mean")
    return SegmentMeanHead(in_features, num_classes, dropout)


@hookimpl
def asczoo_register_heads(register):
    register("avgpool-fc", avgpool_fc)
    register("segment-mean", segment_mean)
