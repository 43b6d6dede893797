"""``check_model(name)``: timm-style registry checks for any model name, the project's own included.

For each model of the registry (or a plugin's recipe), built small with :data:`TINY_OVERRIDES` by
default: ``forward`` (logits ``(B, num_classes)``, finite; ``forward_features`` a ``(B, N, C, F', T')``
map), ``backward`` (every trainable parameter gets a finite gradient), ``config`` (``model.config`` is
JSON, and its recipe alone rebuilds the same architecture), ``save_load`` (``save_pretrained`` then
``from_pretrained`` gives the same logits, strictly loaded).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any, Iterable, Mapping

import torch

from asczoo.models.factory import create_model
from asczoo.models.pretrained import from_pretrained
from asczoo.testing.suite import Suite, isolated_rng
from asczoo.testing.tiny import TINY_OVERRIDES

MODEL_CHECKS = ("forward", "backward", "config", "save_load")


@isolated_rng
def check_model(
    name: str,
    *,
    overrides: Mapping[str, Any] | None = TINY_OVERRIDES,
    num_classes: int = 5,
    batch: int = 2,
    skip: Iterable[str] = (),
):
    """Run the model checks on the registry model ``name`` (see the module docstring).

    ``overrides`` (default :data:`TINY_OVERRIDES`, so the checks run on a CPU in seconds; None for the
    real size) are merged into the recipe. Returns a :class:`ConformanceReport`; raises
    :class:`ConformanceError` listing every failed check.
    """
    suite = Suite(f"model {name!r}" + (" (tiny)" if overrides is TINY_OVERRIDES else ""), MODEL_CHECKS, skip)
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, overrides=overrides)
    x = torch.randn(batch, *model.input_shape)

    def forward() -> None:
        logits = model(x)
        if tuple(logits.shape) != (batch, num_classes):
            raise AssertionError(f"logits have shape {tuple(logits.shape)}, expected {(batch, num_classes)}")
        if not torch.isfinite(logits).all():
            raise AssertionError("logits are not finite")
        features = model.forward_features(x)
        if features.dim() != 5 or tuple(features.shape[:2]) != (batch, model.input_shape[0]):
            raise AssertionError(f"forward_features gave {tuple(features.shape)}, expected (B, N, C, F', T')")
        if features.shape[2] != model.backbone.num_features:
            raise AssertionError(f"forward_features has {features.shape[2]} channels, the backbone says "
                                 f"num_features = {model.backbone.num_features}")

    def backward() -> None:
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(dim=1).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if missing or bad:
            raise AssertionError(f"parameters without a gradient: {missing[:5]}; with a non-finite one: {bad[:5]}")

    def config() -> None:
        saved = json.loads(json.dumps(model.config))  # JSON, all of it
        rebuilt = create_model(name, num_classes=num_classes, overrides=saved["recipe"])
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        other = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        if own != other:
            raise AssertionError("the config's recipe builds a different architecture: "
                                 f"{sorted(set(own) ^ set(other))[:5] or 'same names, other shapes'}")

    def save_load() -> None:
        model.eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            loaded = from_pretrained(folder)
        with torch.no_grad():
            if not torch.allclose(loaded(x), model(x), atol=1e-5, rtol=1e-5):
                raise AssertionError("the reloaded model computes other logits")
        if loaded.classes != model.classes or loaded.frontend_config != model.frontend_config:
            raise AssertionError("the reloaded model has other classes or another frontend")

    for check_name, check in (("forward", forward), ("backward", backward), ("config", config),
                              ("save_load", save_load)):
        suite.run(check_name, check)
    return suite.finish()
