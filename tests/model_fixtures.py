"""Tiny models whose every weight matters, shared by the hub, export and prediction tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import asczoo
from asczoo.testing import TINY_OVERRIDES

CLASSES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
           "street_pedestrian", "street_traffic", "tram"]


def tiny_model(name: str = "atresn-net-resnet18", seed: int = 0) -> asczoo.AscModel:
    """A tiny model whose every weight and statistic matters (relation blocks included)."""
    torch.manual_seed(seed)
    model = asczoo.create_model(name, overrides={**TINY_OVERRIDES, "classes": CLASSES})
    randomise(model, seed)
    return model.eval()


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random batch-norm affine parameters and statistics (a fresh relation block's output scale is 0,
    which would hide it), and random normalisation statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._NormBase):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=g))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    if hasattr(model, "set_normalization"):
        shape = model.norm_mean.shape
        model.set_normalization(torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.5)


def features(model, batch: int = 2, seed: int = 123) -> torch.Tensor:
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(seed))


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def seed_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str, *, ref: str | None = "main",
                   files: list[str] | None = None) -> Path:
    """Lay ``folder``'s files out as huggingface_hub's cache does: snapshots/<commit>/ and refs/<ref>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files or [p.name for p in folder.iterdir()]:
        shutil.copy(folder / name, snapshot / name)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot
