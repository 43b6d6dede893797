"""Conformance checks for relation blocks and their parts (aggregators, position encodings)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from asczoo.testing.suite import (
    SkipCheck, Suite, assert_close, assert_finite, assert_shape, check_describe, check_description,
    check_determinism, check_gradients, check_sample_independence, check_signature, describe_diff,
    isolated_rng, randn, resolve, runtime_checks, wake, woken,
)

#: ``(N, C, F, T)`` feature maps a relation block is run on: several segment counts, widths and
#: (odd) map sizes, each with at least 8 points outside any one segment.
RELATION_SHAPES: tuple[tuple[int, int, int, int], ...] = ((4, 8, 4, 3), (3, 16, 2, 5), (2, 12, 5, 4), (8, 8, 2, 2))
RELATION_CHECKS = (
    "signature", "description", "shapes", "zero_init", "gradients", "batch_independence", "determinism",
    "bf16_autocast", "cuda", "onnx", "describe", "in_model",
)
#: ``(P, k)``: points and neighbours of the pair embeddings an aggregator pools
AGGREGATOR_SHAPES: tuple[tuple[int, int], ...] = ((6, 4), (5, 1), (3, 8))
AGGREGATOR_CHECKS = (
    "signature", "description", "shapes", "order_invariance", "point_independence", "gradients",
    "determinism", "bf16_autocast", "cuda", "onnx",
)
POSITION_CHECKS = (
    "signature", "description", "out_dim", "shapes", "point_independence", "gradients", "determinism",
    "bf16_autocast", "cuda",
)


def _module(obj: Any, what: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise AssertionError(f"the factory returned {type(obj).__name__}, not a torch.nn.Module ({what})")
    return obj


@isolated_rng
def check_relation_block(
    block: Callable[..., nn.Module] | str,
    *,
    options: Mapping[str, Any] | None = None,
    shapes: Sequence[tuple[int, int, int, int]] = RELATION_SHAPES,
    batch: int = 2,
    zero_init: bool = True,
    onnx: bool = False,
    in_model: bool | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    skip: Iterable[str] = (),
):
    """Check a relation block against the contract of ``asczoo_register_relation_blocks``.

    ``block`` is the factory or a registered name; ``options`` are the recipe options passed with
    ``channels``. Checks: ``signature`` (options fit the factory as a recipe would), ``description``,
    ``shapes`` (``(B, N, C, F, T)`` in, same shape and dtype out, finite, input not modified, train and
    eval, for every ``(N, C, F, T)`` of ``shapes``), ``zero_init`` (if claimed: a fresh block is the
    identity in train and eval mode, and some parameter gets a gradient so it can leave it),
    ``gradients`` (every parameter gets a finite non-zero gradient), ``batch_independence`` (eval: a
    sample's output ignores the rest of its batch), ``determinism`` (same seed, same weights; same
    input, same output), ``bf16_autocast`` (CPU), ``cuda`` (when present), ``onnx`` (if ``onnx=True``),
    ``describe`` (if the block has ``describe()``: a JSON-able mapping) and ``in_model`` (a registered
    name is built into a tiny ``resnet18-3d`` at ``res2_1`` and ``res3_1``, both positions, and trained
    one step; a zero-initialised block leaves the network's output unchanged; ``model_overrides`` are
merged into that model's recipe, e.g. ``{"backbone": {"stem": "authors"}}`` for 4x larger maps).

    Returns a :class:`~asczoo.testing.ConformanceReport`; raises :class:`~asczoo.testing.ConformanceError`
    listing every failed check. ``skip`` names checks not to run.
    """
    factory, subject, name = resolve("relation_block", block)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), RELATION_CHECKS, skip)
    if not shapes:
        raise ValueError("shapes must list at least one (N, C, F, T)")
    n, c, f, t = shapes[0]

    def build(channels: int = c) -> nn.Module:
        return _module(factory(channels=channels, **options), f"channels={channels}")

    def live() -> nn.Module:
        blk = build()
        wake(blk)
        return blk.eval()

    def inputs(b: int, seed: int, shape: Sequence[int] = shapes[0]) -> torch.Tensor:
        return randn(b, *shape, seed=seed)

    def signature() -> None:
        check_signature(factory, options, where=suite.report.subject, host=("channels",))

    def shape_check() -> None:
        for shape in shapes:
            blk = build(shape[1])
            for training, sizes in ((True, (batch,)), (False, (batch, 1))):
                blk.train(training)
                mode = "train" if training else "eval"
                for b in sizes:
                    x = inputs(b, 0, shape)
                    before = x.clone()
                    with torch.no_grad():
                        y = blk(x)
                    assert_shape(y, x.shape, f"{mode}-mode output for input {tuple(x.shape)}")
                    if y.dtype != x.dtype:
                        raise AssertionError(f"output dtype {y.dtype} for a {x.dtype} input")
                    assert_finite(y, f"{mode}-mode output for input {tuple(x.shape)}")
                    if not torch.equal(x, before):
                        raise AssertionError("the block modified its input in place; the host reuses it")
        x = inputs(batch, 0)
        before = x.clone()
        with torch.no_grad():
            live()(x)
        if not torch.equal(x, before):  # a fresh block may add zero in place and go unnoticed above
            raise AssertionError("the block (with non-zero weights) modified its input in place; the host reuses it")

    def zero_init_check() -> None:
        if not zero_init:
            raise SkipCheck("zero_init=False: the block does not claim to start as the identity")
        blk = build()
        x = inputs(batch, 1)
        for training in (True, False):
            blk.train(training)
            with torch.no_grad():
                y = blk(x)
            if y.shape != x.shape or not torch.allclose(y, x, rtol=0.0, atol=1e-6):
                mode = "train" if training else "eval"
                raise AssertionError(f"a fresh block in {mode} mode is not the identity: {describe_diff(y, x)}")
        blk.train()
        (blk(x) * randn(*x.shape, seed=2)).sum().backward()
        if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.parameters()):
            raise AssertionError(
                "no parameter of a fresh block gets a non-zero gradient, so training can never move it away "
                "from the identity (are two factors zero-initialised?)"
            )

    def gradients() -> None:
        blk = live().train()
        x = inputs(batch, 3).requires_grad_()
        y = blk(x)
        if torch.allclose(y.detach(), x.detach(), rtol=0.0, atol=1e-6):
            raise AssertionError("with every parameter non-zero the block still adds nothing to its input")
        check_gradients(blk, (y * randn(*y.shape, seed=4)).sum(), inputs=[x])

    def batch_independence() -> None:
        blk = live()
        with torch.no_grad():
            check_sample_independence(blk, lambda b, seed: (inputs(b, seed),))

    def determinism() -> None:
        x = inputs(batch, 5)
        check_determinism(woken(build), lambda m: m(x))

    def bf16_expect(args: tuple[torch.Tensor, ...], ref: torch.Tensor) -> tuple[Sequence[int], torch.Tensor]:
        (x,) = args
        return x.shape, ref - x  # the output keeps the input's shape; errors count against R(X)

    def in_model_check() -> None:
        if in_model is False:
            raise SkipCheck("in_model=False")
        if name is None:
            raise SkipCheck("not a registered name (pass the name to build it into a model)")
        _check_in_model(name, options, zero_init=zero_init, model_overrides=model_overrides)

    suite.run("signature", signature)
    suite.run("description", lambda: check_description("relation_block", name))
    suite.run("shapes", shape_check)
    suite.run("zero_init", zero_init_check)
    suite.run("gradients", gradients)
    suite.run("batch_independence", batch_independence)
    suite.run("determinism", determinism)
    for check, run in runtime_checks(live, lambda seed: (inputs(batch, seed),), seed=6, onnx=onnx,
                                     bf16_expect=bf16_expect).items():
        suite.run(check, run)
    suite.run("describe", lambda: check_describe(build()))
    suite.run("in_model", in_model_check)
    return suite.finish()


def _check_in_model(name: str, options: Mapping[str, Any], *, zero_init: bool,
                    model_overrides: Mapping[str, Any] | None) -> None:
    import asczoo
    from asczoo.recipes.model_recipes import deep_merge
    from asczoo.testing.tiny import tiny_overrides

    if "resnet18-3d" not in asczoo.list_models():
        raise SkipCheck("the built-in recipe 'resnet18-3d' is not available here")
    base = deep_merge(tiny_overrides(), model_overrides)
    plain = asczoo.create_model("resnet18-3d", num_classes=3, overrides=base).eval()
    x = randn(2, *plain.input_shape, seed=9)
    with torch.no_grad():
        expected = plain(x)
    for position in ("after_block", "before_final_activation"):
        relation = {"plugin": name, "placement": ["res2_1", "res3_1"], "position": position, **options}
        model = asczoo.create_model("resnet18-3d", num_classes=3, overrides=deep_merge(base, {"relation": relation}))
        where = f"in a tiny resnet18-3d (position {position})"
        missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
        if unexpected or any(not key.startswith("relations.") for key in missing):
            raise AssertionError(f"{where}: the relation blocks changed the network's own parameters")
        if zero_init:
            model.eval()
            with torch.no_grad():
                assert_close(model(x), expected, f"{where}: fresh blocks must leave the network's output unchanged")
        model.train()
        logits = model(x)
        assert_shape(logits, (2, 3), f"{where}: logits")
        assert_finite(logits, f"{where}: logits")
        logits.logsumexp(dim=1).sum().backward()
        grads = [p.grad for p in model.relations.parameters()]
        if grads and not any(g is not None and g.abs().sum() > 0 for g in grads):
            raise AssertionError(f"{where}: no relation-block parameter gets a non-zero gradient")
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            raise AssertionError(f"{where}: NaN or infinite gradients in the relation blocks")


@isolated_rng
def check_aggregator(
    aggregator: Callable[..., nn.Module] | str,
    *,
    options: Mapping[str, Any] | None = None,
    channels: int = 8,
    shapes: Sequence[tuple[int, int]] = AGGREGATOR_SHAPES,
    batch: int = 2,
    order_invariant: bool = True,
    onnx: bool = False,
    skip: Iterable[str] = (),
):
    """Check a neighbourhood aggregator: ``factory(*, channels, **options)`` mapping pair embeddings
    ``(B, P, k, C)`` to point embeddings ``(B, P, C)``.

    Checks: ``signature``, ``description``, ``shapes`` (every ``(P, k)`` of ``shapes``, train and eval),
    ``order_invariance`` (the neighbours are a set: permuting k changes nothing; ``order_invariant=False``
    for an aggregator that uses their order, nearest first), ``point_independence`` (eval: a point's
    output depends only on its own k embeddings), ``gradients``, ``determinism``, ``bf16_autocast``,
    ``cuda``, ``onnx``.
    """
    factory, subject, name = resolve("aggregator", aggregator)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), AGGREGATOR_CHECKS, skip)
    p, k = shapes[0]

    def build() -> nn.Module:
        return _module(factory(channels=channels, **options), f"channels={channels}")

    def live() -> nn.Module:
        agg = build()
        wake(agg)
        return agg.eval()

    def pairs(b: int, seed: int, shape: tuple[int, int] = shapes[0]) -> torch.Tensor:
        return randn(b, shape[0], shape[1], channels, seed=seed)

    def shape_check() -> None:
        agg = build()
        for shape in shapes:
            for training in (True, False):
                agg.train(training)
                e = pairs(batch, 0, shape)
                with torch.no_grad():
                    out = agg(e)
                assert_shape(out, (batch, shape[0], channels), f"output for pair embeddings {tuple(e.shape)}")
                assert_finite(out, f"output for pair embeddings {tuple(e.shape)}")

    def order() -> None:
        if not order_invariant:
            raise SkipCheck("order_invariant=False: the aggregator uses the neighbours' order")
        agg = live()
        e = pairs(batch, 1)
        if e.shape[2] < 2:
            raise SkipCheck(f"k = {e.shape[2]} in shapes[0]: nothing to permute")
        perm = torch.arange(e.shape[2]).roll(1)  # moves every neighbour
        with torch.no_grad():
            assert_close(agg(e[:, :, perm]), agg(e), "output with the k neighbours permuted")

    def independence() -> None:
        agg = live()
        e = pairs(batch, 2)
        b, pts = e.shape[:2]
        with torch.no_grad():
            together = agg(e)
            apart = agg(e.reshape(b * pts, 1, *e.shape[2:])).reshape(together.shape)
            assert_close(apart, together, "each point pooled on its own vs. all points of the batch together")

    def gradients() -> None:
        agg = live().train()
        e = pairs(batch, 3).requires_grad_()
        out = agg(e)
        check_gradients(agg, (out * randn(*out.shape, seed=4)).sum(), inputs=[e])

    def determinism() -> None:
        e = pairs(batch, 5)
        check_determinism(woken(build), lambda m: m(e))

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject, host=("channels",)))
    suite.run("description", lambda: check_description("aggregator", name))
    suite.run("shapes", shape_check)
    suite.run("order_invariance", order)
    suite.run("point_independence", independence)
    suite.run("gradients", gradients)
    suite.run("determinism", determinism)
    for check, run in runtime_checks(live, lambda seed: (pairs(batch, seed),), seed=6, onnx=onnx).items():
        suite.run(check, run)
    return suite.finish()


@isolated_rng
def check_position_encoding(
    encoding: Callable[..., nn.Module] | str,
    *,
    options: Mapping[str, Any] | None = None,
    points: int = 6,
    k: int = 3,
    batch: int = 2,
    skip: Iterable[str] = (),
):
    """Check a position encoding: ``factory(**options)`` -> a module with an integer ``out_dim`` mapping
    centre positions ``(B or 1, P, 1, 3)`` and neighbour positions ``(B, P, k, 3)`` to ``(B, P, k, out_dim)``.

    Checks: ``signature``, ``description``, ``out_dim``, ``shapes`` (broadcast and per-sample centres,
    train and eval), ``point_independence`` (eval: each pair's encoding depends on that pair only),
    ``gradients`` (parameters, and the positions when ``out_dim > 0``), ``determinism``,
    ``bf16_autocast``, ``cuda``.
    """
    factory, subject, name = resolve("position_encoding", encoding)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), POSITION_CHECKS, skip)

    def build() -> nn.Module:
        return _module(factory(**options), "position encoding")

    def live() -> nn.Module:
        enc = build()
        wake(enc)
        return enc.eval()

    def positions(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(b, points, 1, 3, generator=gen), torch.rand(b, points, k, 3, generator=gen)

    def out_dim() -> int:
        dim = getattr(build(), "out_dim", None)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise AssertionError(f"the module must have an integer out_dim >= 0, got {dim!r}")
        return dim

    def shape_check() -> None:
        dim = out_dim()
        enc = build()
        centre, neighbour = positions(batch, 0)
        for training in (True, False):
            enc.train(training)
            for c in (centre, centre[:1].expand(1, points, 1, 3)):
                with torch.no_grad():
                    out = enc(c, neighbour)
                assert_shape(out, (batch, points, k, dim), f"encoding for centres {tuple(c.shape)}")
                assert_finite(out, "encoding")

    def independence() -> None:
        enc = live()
        centre, neighbour = positions(batch, 1)
        with torch.no_grad():
            together = enc(centre, neighbour)
            apart = enc(centre.reshape(batch * points, 1, 1, 3), neighbour.reshape(batch * points, 1, k, 3))
        assert_close(apart.reshape(together.shape), together, "each point encoded on its own vs. all together")

    def gradients() -> None:
        enc = live().train()
        centre, neighbour = (p.requires_grad_() for p in positions(batch, 2))
        out = enc(centre, neighbour)
        if out.shape[-1] == 0:
            if list(enc.parameters()):
                raise AssertionError("out_dim is 0 but the encoding has parameters")
            raise SkipCheck("out_dim is 0: nothing to differentiate")
        check_gradients(enc, (out * randn(*out.shape, seed=3)).sum())
        if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in (centre, neighbour)):
            raise AssertionError("the encoding does not depend on the positions")

    def determinism() -> None:
        centre, neighbour = positions(batch, 4)
        check_determinism(woken(build), lambda m: m(centre, neighbour))

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject))
    suite.run("description", lambda: check_description("position_encoding", name))
    suite.run("out_dim", out_dim)
    suite.run("shapes", shape_check)
    suite.run("point_independence", independence)
    suite.run("gradients", gradients)
    suite.run("determinism", determinism)
    for check, run in runtime_checks(live, lambda seed: positions(batch, seed), seed=5, onnx=None).items():
        suite.run(check, run)
    return suite.finish()
