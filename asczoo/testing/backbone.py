"""Conformance checks for backbones and inflators."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from asczoo.interfaces import Backbone, Inflator, SegmentLayout
from asczoo.testing.suite import (
    SkipCheck, Suite, assert_close, assert_finite, check_cuda, check_description, check_determinism,
    check_gradients, check_sample_independence, check_signature, isolated_rng, randn, resolve, runtime_checks,
    wake, woken,
)

#: the paper's placements of relation blocks (res2_1 = the first block of stage 2)
PAPER_PLACEMENTS = ("res2_1", "res2_2", "res3_1", "res3_2")
BACKBONE_CHECKS = (
    "signature", "description", "interface", "shapes", "placements", "gradients", "batch_independence",
    "determinism", "bf16_autocast", "cuda", "onnx",
)
INFLATOR_CHECKS = (
    "signature", "description", "inflate", "parameter_names", "layout", "segment_equivalence", "gradients",
    "determinism", "cuda",
)
#: small widths for the built-in ``timm-resnet`` when it is the default backbone of :func:`check_inflator`
TINY_TIMM_RESNET = {"channels": [8, 16, 32, 64], "stem_width": 8}


@isolated_rng
def check_backbone(
    backbone: Callable[..., Backbone] | str,
    *,
    options: Mapping[str, Any] | None = None,
    in_chans: Sequence[int] = (3, 1),
    input_sizes: Sequence[tuple[int, int]] = ((32, 24), (40, 16)),
    placements: Sequence[str] = PAPER_PLACEMENTS,
    batch: int = 2,
    onnx: bool = False,
    skip: Iterable[str] = (),
):
    """Check a 2D backbone: ``factory(*, in_chans, **options)`` -> :class:`asczoo.interfaces.Backbone`.

    Checks: ``signature``, ``description``, ``interface`` (a ``Backbone`` with an integer
    ``num_features`` and resolvable ``stage_paths``), ``shapes`` (``(B, in_chans, F, T)`` ->
    ``(B, num_features, F', T')`` for every ``in_chans`` and ``input_sizes``, train and eval),
    ``placements`` (each of ``placements`` maps to a module whose output has ``block_channels``
    channels, its final activation path resolves, and an impossible placement raises),
    ``gradients``, ``batch_independence`` (eval), ``determinism``, ``bf16_autocast``, ``cuda``,
    ``onnx`` (if ``onnx=True``).
    """
    factory, subject, name = resolve("backbone", backbone)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), BACKBONE_CHECKS, skip)
    size = input_sizes[0]

    def build(channels: int = in_chans[0]) -> Backbone:
        net = factory(in_chans=channels, **options)
        if not isinstance(net, Backbone):
            raise AssertionError(f"the factory returned {type(net).__name__}, not an asczoo.interfaces.Backbone")
        return net

    def images(b: int, seed: int, channels: int = in_chans[0], hw: tuple[int, int] = size) -> torch.Tensor:
        return randn(b, channels, *hw, seed=seed)

    def interface() -> None:
        net = build()
        if isinstance(net.num_features, bool) or not isinstance(net.num_features, int) or net.num_features < 1:
            raise AssertionError(f"num_features must be a positive integer, got {net.num_features!r}")
        stages = list(net.stage_paths())
        if not stages:
            raise AssertionError("stage_paths() is empty")
        for label, path in stages:
            net.get_submodule(path)  # raises AttributeError naming the missing module

    def shape_check() -> None:
        for channels in in_chans:
            net = build(channels)
            for hw in input_sizes:
                for training in (True, False):
                    net.train(training)
                    x = images(batch, 0, channels, hw)
                    with torch.no_grad():
                        y = net(x)
                    what = f"output for input {tuple(x.shape)} ({'train' if training else 'eval'})"
                    if not isinstance(y, torch.Tensor) or y.dim() != 4:
                        raise AssertionError(f"{what}: expected a (B, C, F', T') tensor, got {getattr(y, 'shape', y)}")
                    if y.shape[:2] != (batch, net.num_features):
                        raise AssertionError(f"{what}: expected (B, num_features) = {(batch, net.num_features)} "
                                             f"leading dims, got {tuple(y.shape)}")
                    assert_finite(y, what)

    def placement_check() -> None:
        net = build().eval()
        seen: dict[str, int] = {}
        handles = []
        for placement in placements:
            path = net.block_path(placement)
            module = net.get_submodule(path)
            handles.append(module.register_forward_hook(
                lambda _m, _a, out, placement=placement: seen.__setitem__(placement, out.shape[1])))
            act = net.final_activation_path(placement)
            if act is not None:
                net.get_submodule(act)
        try:
            with torch.no_grad():
                net(images(1, 1))
        finally:
            for handle in handles:
                handle.remove()
        for placement in placements:
            if placement not in seen:
                raise AssertionError(f"the module of {placement!r} ({net.block_path(placement)}) is not run in forward")
            if seen[placement] != net.block_channels(placement):
                raise AssertionError(f"{placement!r}: block_channels() says {net.block_channels(placement)}, "
                                     f"but the block outputs {seen[placement]} channels")
        try:
            path = net.block_path("res9_99")
        except Exception:  # noqa: BLE001 - any clear error is fine
            return
        raise AssertionError(f"block_path('res9_99') returned {path!r} instead of raising")

    def live() -> Backbone:
        net = build()
        wake(net)
        return net.eval()

    def gradients() -> None:
        net = live().train()
        x = images(batch, 2).requires_grad_()
        y = net(x)
        check_gradients(net, (y * randn(*y.shape, seed=3)).sum(), inputs=[x])

    def batch_independence() -> None:
        net = live()
        with torch.no_grad():
            check_sample_independence(net, lambda b, seed: (images(b, seed),))

    def determinism() -> None:
        x = images(batch, 4)
        check_determinism(woken(build), lambda m: m(x))

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject, host=("in_chans",)))
    suite.run("description", lambda: check_description("backbone", name))
    suite.run("interface", interface)
    suite.run("shapes", shape_check)
    suite.run("placements", placement_check)
    suite.run("gradients", gradients)
    suite.run("batch_independence", batch_independence)
    suite.run("determinism", determinism)
    for check, run in runtime_checks(live, lambda seed: (images(batch, seed),), seed=5, onnx=onnx).items():
        suite.run(check, run)
    return suite.finish()


@isolated_rng
def check_inflator(
    inflator: Callable[..., Inflator] | str,
    *,
    options: Mapping[str, Any] | None = None,
    backbone: Callable[..., Backbone] | str = "timm-resnet",
    backbone_options: Mapping[str, Any] | None = None,
    segments: int = 3,
    input_size: tuple[int, int] = (32, 24),
    segment_equivalence: bool = True,
    skip: Iterable[str] = (),
):
    """Check an inflator: ``factory(**options)`` -> :class:`asczoo.interfaces.Inflator`, on ``backbone``.

    Checks: ``signature``, ``description``, ``inflate`` (returns a ``Backbone`` and a ``SegmentLayout``),
    ``parameter_names`` (the 2D backbone's state-dict keys, so ``load_2d_state`` of a segment model works),
    ``layout`` (clip tensors in and out as ``(B, N, C, F, T)``; ``from_segments`` inverts ``to_segments``),
    ``segment_equivalence`` (docs/method.md section 4: after ``load_2d_state``, the inflated network in eval mode equals the
    2D network applied to each segment; ``segment_equivalence=False`` for inflators that mix segments from
    the start), ``gradients``, ``determinism``, ``cuda``.
    """
    factory, subject, name = resolve("inflator", inflator)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), INFLATOR_CHECKS, skip)
    backbone_factory, _, backbone_name = resolve("backbone", backbone)
    if backbone_options is None:
        backbone_options = TINY_TIMM_RESNET if backbone_name == "timm-resnet" else {}

    def make_2d(seed: int) -> Backbone:
        torch.manual_seed(seed)
        return backbone_factory(**backbone_options)

    def inflate(net2d: Backbone) -> tuple[Inflator, Backbone, SegmentLayout]:
        inf = factory(**options)
        if not isinstance(inf, Inflator):
            raise AssertionError(f"the factory returned {type(inf).__name__}, not an asczoo.interfaces.Inflator")
        result = inf.inflate(copy.deepcopy(net2d))
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AssertionError("inflate() must return (backbone, layout)")
        net, layout = result
        if not isinstance(net, Backbone):
            raise AssertionError(f"inflate() returned a {type(net).__name__} backbone, not an asczoo Backbone")
        if not isinstance(layout, SegmentLayout):
            raise AssertionError(f"inflate() returned a {type(layout).__name__} layout, not a SegmentLayout")
        return inf, net, layout

    def clips(b: int, seed: int) -> torch.Tensor:
        return randn(b, segments, 3, *input_size, seed=seed)

    def run(net: Backbone, layout: SegmentLayout, x: torch.Tensor) -> torch.Tensor:
        return layout.exit(net(layout.enter(x)))

    def parameter_names() -> None:
        net2d = make_2d(0)
        _, net, _ = inflate(net2d)
        own, theirs = set(net.state_dict()), set(net2d.state_dict())
        if own != theirs:
            extra, missing = sorted(own - theirs)[:5], sorted(theirs - own)[:5]
            raise AssertionError(f"state-dict keys changed: added {extra}, lost {missing}")

    def layout_check() -> None:
        _, net, layout = inflate(make_2d(0))
        net.eval()
        x = clips(2, 1)
        captured: list[torch.Tensor] = []
        module = net.get_submodule(net.block_path("res2_1"))
        handle = module.register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:
            with torch.no_grad():
                y = run(net, layout, x)
        finally:
            handle.remove()
        if y.dim() != 5 or y.shape[:3] != (2, segments, net.num_features):
            raise AssertionError(
                f"layout.exit gives {tuple(y.shape)}; expected (2, {segments}, {net.num_features}, F', T')")
        inner = captured[0]
        seg = layout.to_segments(inner)
        if seg.dim() != 5 or seg.shape[:3] != (2, segments, net.block_channels("res2_1")):
            raise AssertionError(f"to_segments gives {tuple(seg.shape)} for res2_1's output; expected (B, N, C, F, T)")
        assert_close(layout.from_segments(seg), inner, "from_segments(to_segments(y)) vs. y", rtol=0, atol=0)

    def equivalence() -> None:
        if not segment_equivalence:
            raise SkipCheck("segment_equivalence=False")
        net2d = make_2d(0).eval()
        inf, net, layout = inflate(make_2d(1))  # other weights, then the 2D ones loaded in
        inf.load_2d_state(net, net2d.state_dict())
        net.eval()
        x = clips(2, 2)
        with torch.no_grad():
            expected = torch.stack([net2d(x[:, i]) for i in range(segments)], dim=1)
            assert_close(run(net, layout, x), expected,
                         "inflated network vs. the 2D network on each segment", rtol=1e-4, atol=1e-4)

    def gradients() -> None:
        _, net, layout = inflate(make_2d(0))
        wake(net)  # zero-initialised residual scales would stop the gradient of everything before them
        net.train()
        x = clips(2, 3).requires_grad_()
        y = run(net, layout, x)
        check_gradients(net, (y * randn(*y.shape, seed=4)).sum(), inputs=[x])

    def determinism() -> None:
        x = clips(2, 5)
        layouts: list[SegmentLayout] = []

        def build() -> Backbone:
            _, net, layout = inflate(make_2d(0))
            layouts.append(layout)
            return net

        check_determinism(build, lambda m: run(m, layouts[0], x))

    def cuda() -> None:
        _, net, layout = inflate(make_2d(0))
        x = clips(2, 6)
        wrapped = _Clip(net, layout).eval()
        with torch.no_grad():
            ref = wrapped(x)
        check_cuda(wrapped, (x,), ref)

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject))
    suite.run("description", lambda: check_description("inflator", name))
    suite.run("inflate", lambda: inflate(make_2d(0)))
    suite.run("parameter_names", parameter_names)
    suite.run("layout", layout_check)
    suite.run("segment_equivalence", equivalence)
    suite.run("gradients", gradients)
    suite.run("determinism", determinism)
    suite.run("cuda", cuda)
    return suite.finish()


class _Clip(nn.Module):
    """An inflated backbone with its layout, as one module on clip tensors."""

    def __init__(self, net: Backbone, layout: SegmentLayout) -> None:
        super().__init__()
        self.net = net
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.exit(self.net(self.layout.enter(x)))
