"""Neighbourhood aggregators: pair embeddings ``(B, P, k, C)`` -> point embeddings ``(B, P, C)``.

* ``max``: channel-wise maximum over the k neighbours (TReSN, SeNoT-Net).
* ``mean``: channel-wise average over the k neighbours.
* ``attentive``: the paper's attentive pooling (eqs. 3-4): scores ``g(e)`` with ``g`` a linear map
  C -> C without bias, a softmax over the k neighbours per channel, and the weighted sum of the
  embeddings; then (the authors' code, ``project=True``) a 1x1 conv C -> C, batch norm, ReLU.

A third-party aggregator registers through ``asczoo_register_aggregators`` with a factory
``(*, channels, **options) -> nn.Module`` and is picked by name in a recipe's ``relation`` section
(``aggregator: NAME``, options in ``aggregator_options``).
"""

from __future__ import annotations

import torch
from torch import nn

from asczoo_plugins.relation.layers import LinearNorm


class MaxPool(nn.Module):
    """Channel-wise maximum over the neighbours."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e.amax(dim=2)


class MeanPool(nn.Module):
    """Channel-wise average over the neighbours."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e.mean(dim=2)


class AttentivePool(nn.Module):
    """``a = sum_s softmax_s(g(e_s)) * e_s`` (per channel), then an optional 1x1 conv + BN + ReLU."""

    def __init__(self, channels: int, *, project: bool = True) -> None:
        super().__init__()
        self.score = nn.Linear(channels, channels, bias=False)  # g
        self.project = LinearNorm(channels, channels) if project else None

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(e), dim=2)
        a = (weights * e).sum(dim=2)
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
