"""The host side of augmentation: a training recipe's list becomes one chain, options are checked."""

from __future__ import annotations

import pytest
import torch

import asczoo
from asczoo.data.augment import Compose, create_augmentations, one_hot
from asczoo.recipes.schema import RecipeError


def batch(b=6, n=4, f=16, t=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, f, t, generator=g), one_hot(torch.arange(b) % classes, classes)


def test_recipes_build_chains_and_options_are_checked():
    chain = create_augmentations(["lr-swap", {"plugin": "spec-mask", "time_masks": 1}, {"plugin": "mixup", "alpha": 0.2}])
    assert isinstance(chain, Compose) and len(chain.augmentations) == 3
    x, y = batch()
    out, targets = chain(x, y)
    assert out.shape == x.shape and targets.shape == y.shape
    identity = create_augmentations(None)
    assert identity(x, y) == (x, y)
    with pytest.raises(RecipeError, match="unknown key 'alpha'"):
        asczoo.create_augmentation("lr-swap", alpha=1.0)
    with pytest.raises(RecipeError, match="'per'"):
        asczoo.create_augmentation("lr-swap", per="epoch")
    with pytest.raises(ValueError, match="probability"):
        asczoo.create_augmentation("lr-swap", p=1.5)
    with pytest.raises(ValueError, match="expected features"):
        asczoo.create_augmentation("lr-swap")(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="augmentation 0"):
        create_augmentations([42])
