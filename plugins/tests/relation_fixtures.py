"""Helpers shared by the relation-block tests."""

from __future__ import annotations

import torch


def randomise(block: torch.nn.Module, *, seed: int) -> None:
    """Random non-zero weights everywhere, the output scale included, and random running stats."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for name, buf in block.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen, dtype=buf.dtype) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen, dtype=buf.dtype) + 0.5)
