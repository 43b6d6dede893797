"""Conformance checks for classification heads."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from asczoo.testing.suite import (
    Suite, assert_finite, assert_shape, check_description, check_determinism, check_gradients,
    check_sample_independence, check_signature, isolated_rng, randn, resolve, runtime_checks, wake, woken,
)

HEAD_CHECKS = (
    "signature", "description", "shapes", "gradients", "batch_independence", "determinism", "bf16_autocast",
    "cuda", "onnx",
)


@isolated_rng
def check_head(
    head: Callable[..., nn.Module] | str,
    *,
    options: Mapping[str, Any] | None = None,
    in_features: int = 16,
    num_classes: int = 5,
    shapes: Sequence[tuple[int, int, int]] = ((4, 3, 2), (1, 2, 2), (8, 1, 1)),
    batch: int = 2,
    onnx: bool = False,
    skip: Iterable[str] = (),
):
    """Check a classification head: ``factory(*, in_features, num_classes, **options)`` mapping a feature
    map ``(B, N, in_features, F, T)`` to logits ``(B, num_classes)``.

    Checks: ``signature``, ``description``, ``shapes`` (every ``(N, F, T)`` of ``shapes``, train and eval,
    a batch of one), ``gradients``, ``batch_independence`` (eval), ``determinism`` (eval),
    ``bf16_autocast``, ``cuda``, ``onnx`` (if ``onnx=True``).
    """
    factory, subject, name = resolve("head", head)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), HEAD_CHECKS, skip)

    def build(classes: int = num_classes) -> nn.Module:
        out = factory(in_features=in_features, num_classes=classes, **options)
        if not isinstance(out, nn.Module):
            raise AssertionError(f"the factory returned {type(out).__name__}, not a torch.nn.Module")
        return out

    def features(b: int, seed: int, nft: tuple[int, int, int] = shapes[0]) -> torch.Tensor:
        n, f, t = nft
        return randn(b, n, in_features, f, t, seed=seed)

    def shape_check() -> None:
        for classes in (num_classes, 2):
            net = build(classes)
            for nft in shapes:
                for training, sizes in ((True, (batch,)), (False, (batch, 1))):
                    net.train(training)
                    for b in sizes:
                        x = features(b, 0, nft)
                        with torch.no_grad():
                            y = net(x)
                        assert_shape(y, (b, classes), f"logits for features {tuple(x.shape)}")
                        assert_finite(y, "logits")

    def live() -> nn.Module:
        net = build()
        wake(net)
        return net.eval()

    def gradients() -> None:
        net = live().train()
        x = features(batch, 1).requires_grad_()
        y = net(x)
        check_gradients(net, y.logsumexp(dim=1).sum() - y[:, 0].sum(), inputs=[x])

    def batch_independence() -> None:
        net = live()
        with torch.no_grad():
            check_sample_independence(net, lambda b, seed: (features(b, seed),))

    def determinism() -> None:
        x = features(batch, 2)
        check_determinism(woken(build), lambda m: m(x))

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject,
                                                   host=("in_features", "num_classes")))
    suite.run("description", lambda: check_description("head", name))
    suite.run("shapes", shape_check)
    suite.run("gradients", gradients)
    suite.run("batch_independence", batch_independence)
    suite.run("determinism", determinism)
    for check, run in runtime_checks(live, lambda seed: (features(batch, seed),), seed=3, onnx=onnx).items():
        suite.run(check, run)
    return suite.finish()
