"""Batch augmentations by name, and a chain of them.

An augmentation is a plugin part: ``aug(features (B, N, 3, F, T), targets (B, K)) -> (features,
targets)``, applied per batch on the training device, in training only. ``targets`` are class
probabilities (one-hot for plain labels, see :func:`one_hot`) so that mixup can blend them. Randomness
comes from torch's global generator (``torch.manual_seed`` makes runs repeatable) unless the
augmentation was built with a ``seed``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from asczoo import plugins
from asczoo.arguments import check_arguments

Augmentation = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def create_augmentation(name: str, **options: Any) -> Augmentation:
    """Build the augmentation plugin ``name`` (``lr-swap``, ``mixup``, ``spec-mask``, ...) with ``options``."""
    part = plugins.get_part("augmentation", name)
    check_arguments(part.factory, options, where=f"augmentation {name!r}")
    augmentation = part.factory(**options)
    if not callable(augmentation):
        raise TypeError(f"augmentation plugin {name!r} returned {type(augmentation).__name__}, not a callable")
    return augmentation


class Compose:
    """Apply augmentations in order: ``Compose([a, b])(x, y) == b(*a(x, y))``."""

    def __init__(self, augmentations: Iterable[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for augmentation in self.augmentations:
            features, targets = augmentation(features, targets)
        return features, targets

    def __repr__(self) -> str:
        return f"Compose({self.augmentations!r})"


def create_augmentations(specs: Iterable[str | Mapping[str, Any]] | None) -> Compose:
    """A :class:`Compose` from a recipe-style list: names, or mappings with ``plugin`` and options.

    ``["lr-swap", {"plugin": "mixup", "alpha": 0.4}]``; None or an empty list gives the identity.
    """
    built = []
    for i, spec in enumerate(specs or []):
        if isinstance(spec, str):
            built.append(create_augmentation(spec))
        elif isinstance(spec, Mapping) and isinstance(spec.get("plugin"), str):
            options = {k: v for k, v in spec.items() if k != "plugin"}
            built.append(create_augmentation(spec["plugin"], **options))
        else:
            raise ValueError(f"augmentation {i}: expected a name or a mapping with 'plugin', got {spec!r}")
    return Compose(built)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels ``(B,)`` -> float targets ``(B, num_classes)``.

    A scatter, not ``F.one_hot``: that reads the largest label back to check it, which waits for the
    device at every training step (the datasets check labels when they are read)."""
    labels = labels.long()
    return torch.zeros(labels.shape[0], num_classes, device=labels.device).scatter_(1, labels[:, None], 1.0)


def check_batch(features: torch.Tensor, targets: torch.Tensor, who: str) -> None:
    """Refuse tensors that are not ``(B, N, C, F, T)`` features with ``(B, K)`` targets."""
    if features.dim() != 5:
        raise ValueError(f"{who}: expected features (B, N, 3, F, T), got shape {tuple(features.shape)}")
    if targets.dim() != 2 or targets.shape[0] != features.shape[0]:
        raise ValueError(f"{who}: expected targets (B, K) with B = {features.shape[0]}, got {tuple(targets.shape)}")
