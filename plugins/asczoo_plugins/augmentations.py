"""Batch augmentations: left/right swap (the authors'), mixup, and time/frequency masking.

Each works on a batch ``features (B, N, 3, F, T)`` (channels L, R, L-R) with ``targets (B, K)`` class
probabilities, on whatever device the batch is on, and returns new tensors (inputs are not modified).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from asczoo import hookimpl
from asczoo.augment import check_batch


class _Random:
    """Random draws from torch's global generator, or from an own one when ``seed`` is given."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(*shape, device=device, generator=self.generator(device))

    def randint(self, high: torch.Tensor | int, *shape: int, device: torch.device) -> torch.Tensor:
        """Integers in ``[0, high)``; ``high`` may be a tensor (one bound per element)."""
        return (self.rand(*shape, device=device) * high).long()


class LeftRightSwap:
    """Swap the left and right channels with probability ``p`` (per sample, or once per batch).

    The difference channel is the log power of ``L - R``, which is that of ``R - L``: it stays as is.
    """

    def __init__(self, p: float, per: str, seed: int | None) -> None:
        self.p, self.per, self.random = p, per, _Random(seed)

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "lr-swap")
        count = features.shape[0] if self.per == "sample" else 1
        swap = (self.random.rand(count, device=features.device) < self.p).expand(features.shape[0])
        # slices, not indexing with a Python list: that builds a host index tensor and copies it to the
        # device at every step, which waits for the device queue
        swapped = torch.cat((features[:, :, 1:2], features[:, :, 0:1], features[:, :, 2:]), dim=2)
        mask = swap.view(-1, 1, 1, 1, 1)
        return torch.where(mask, swapped, features), targets

    def __repr__(self) -> str:
        return f"LeftRightSwap(p={self.p}, per={self.per!r})"


class Mixup:
    """Blend each sample with another of the batch: ``lam * x + (1 - lam) * x[perm]``, targets alike.

    ``lam ~ Beta(alpha, alpha)``, one per batch (the classic form) or one per sample; applied to the
    batch with probability ``p``.
    """

    def __init__(self, alpha: float, p: float, per: str, seed: int | None) -> None:
        self.alpha, self.p, self.per, self.random = alpha, p, per, _Random(seed)

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "mixup")
        device, batch = features.device, features.shape[0]
        if batch < 2 or float(self.random.rand(1, device=device)) >= self.p:
            return features, targets
        count = batch if self.per == "sample" else 1
        # lam is drawn on the CPU, so a seeded run gives the same batch on every device
        generator = self.random.generator(torch.device("cpu"))
        if generator is None:
            beta = torch.distributions.Beta(torch.tensor(float(self.alpha)), torch.tensor(float(self.alpha)))
            lam = beta.sample((count,))
        else:
            seed = int(torch.randint(2**62, (1,), generator=generator))
            lam = torch.from_numpy(np.random.default_rng(seed).beta(self.alpha, self.alpha, size=count)).float()
        lam = lam.to(device).expand(batch)
        order = torch.randperm(batch, device="cpu", generator=generator).to(device)
        mixed = lam.view(-1, 1, 1, 1, 1) * features + (1 - lam.view(-1, 1, 1, 1, 1)) * features[order]
        blended = lam.view(-1, 1) * targets + (1 - lam.view(-1, 1)) * targets[order]
        return mixed.to(features.dtype), blended.to(targets.dtype)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha}, p={self.p}, per={self.per!r})"


class SpecMask:
    """SpecAugment-style masking: ``freq_masks`` bands of up to ``freq_width`` mel bins (the same in
    every segment and channel of a sample) and ``time_masks`` spans of up to ``time_width`` frames in each
    segment. Masked cells get the sample's mean per (channel, band) (``fill="mean"``, the neutral value
    of a log-mel) or zero."""

    def __init__(self, freq_masks: int, freq_width: int, time_masks: int, time_width: int, p: float,
                 fill: str, seed: int | None) -> None:
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.p, self.fill, self.random = p, fill, _Random(seed)

    def _spans(self, count: int, width: int, size: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Boolean mask over the last axis (``size``) with ``count`` random spans per row of ``shape``."""
        positions = torch.arange(size, device=device)
        mask = torch.zeros(*shape, size, dtype=torch.bool, device=device)
        for _ in range(count):
            w = self.random.randint(min(width, size) + 1, *shape, device=device)
            start = (self.random.rand(*shape, device=device) * (size - w + 1)).long()
            mask |= (positions >= start.unsqueeze(-1)) & (positions < (start + w).unsqueeze(-1))
        return mask

    def __call__(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(features, targets, "spec-mask")
        device = features.device
        b, n, c, f, t = features.shape
        apply = (self.random.rand(b, device=device) < self.p).view(b, 1, 1, 1, 1)
        freq = self._spans(self.freq_masks, self.freq_width, f, (b,), device).view(b, 1, 1, f, 1)
        time = self._spans(self.time_masks, self.time_width, t, (b, n), device).view(b, n, 1, 1, t)
        mask = (freq | time) & apply
        if self.fill == "mean":
            value = features.mean(dim=(1, 4), keepdim=True).expand_as(features)
        else:
            value = torch.zeros_like(features)
        return torch.where(mask, value, features), targets

    def __repr__(self) -> str:
        return (f"SpecMask(freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"time_masks={self.time_masks}, time_width={self.time_width}, p={self.p}, fill={self.fill!r})")


def _probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p = {p!r} is not a probability in [0, 1]")


def lr_swap(*, p: float = 0.5, per: Literal["sample", "batch"] = "sample", seed: int | None = None) -> LeftRightSwap:
    """Random left/right channel swap (the authors' augmentation; they swap per batch)."""
    _probability("lr-swap", p)
    return LeftRightSwap(p, per, seed)


def mixup(*, alpha: float = 0.4, p: float = 1.0, per: Literal["batch", "sample"] = "batch",
          seed: int | None = None) -> Mixup:
    """Mixup of features and targets with lam ~ Beta(alpha, alpha) (authors' alpha: 0.4, off by default)."""
    if alpha <= 0:
        raise ValueError(f"mixup: alpha = {alpha!r} must be positive")
    _probability("mixup", p)
    return Mixup(alpha, p, per, seed)


def spec_mask(*, freq_masks: int = 2, freq_width: int = 16, time_masks: int = 2, time_width: int = 10,
              p: float = 1.0, fill: Literal["mean", "zero"] = "mean", seed: int | None = None) -> SpecMask:
    """Time and frequency masking (SpecAugment) of the log-mel segments."""
    for key, value in (("freq_masks", freq_masks), ("freq_width", freq_width), ("time_masks", time_masks),
                       ("time_width", time_width)):
        if value < 0:
            raise ValueError(f"spec-mask: {key} = {value!r} must not be negative")
    _probability("spec-mask", p)
    return SpecMask(freq_masks, freq_width, time_masks, time_width, p, fill, seed)


@hookimpl
def asczoo_register_augmentations(register):
    register("lr-swap", lr_swap)
    register("mixup", mixup)
    register("spec-mask", spec_mask)
