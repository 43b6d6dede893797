"""The machinery shared by the conformance checks: running named checks, reporting, tensor helpers.

A ``check_<kind>`` function runs a fixed list of named checks on a part. Every check runs even when
an earlier one failed, and the failures are raised together as one :class:`ConformanceError` (an
``AssertionError``, so pytest shows it as a failed assertion). A check that cannot run here (no CUDA,
no ONNX runtime, nothing claimed) is recorded as skipped with its reason in the returned
:class:`ConformanceReport`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import traceback
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn


class ConformanceError(AssertionError):
    """A part failed one or more conformance checks; the message lists each failure."""


class ConformanceWarning(UserWarning):
    """A requested check could not run here (for example ``onnx=True`` without onnxruntime)."""


class SkipCheck(Exception):
    """Raised inside a check that does not apply or cannot run here; the message is the reason."""


@dataclasses.dataclass
class ConformanceReport:
    """What a ``check_<kind>`` call verified: the checks that passed and the skipped ones, with reasons."""

    subject: str
    passed: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.subject}: {len(self.passed)} check(s) passed: {', '.join(self.passed) or 'none'}"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)


class Suite:
    """Runs named checks on one subject and collects what passed, failed and was skipped."""

    def __init__(self, subject: str, checks: Sequence[str], skip: Iterable[str] = ()) -> None:
        skip = set(skip)
        unknown = skip - set(checks)
        if unknown:
            raise ValueError(
                f"skip names unknown check(s) {', '.join(sorted(unknown))}; the checks are {', '.join(checks)}"
            )
        self.checks = list(checks)
        self.skip = skip
        self.report = ConformanceReport(subject)
        self.failures: list[str] = []

    def run(self, name: str, check: Callable[[], None]) -> None:
        if name not in self.checks:  # a programming error in asczoo.testing itself
            raise ValueError(f"check {name!r} is not declared for this suite")
        if name in self.skip:
            self.report.skipped[name] = "skipped by the caller"
            return
        try:
            check()
        except SkipCheck as exc:
            self.report.skipped[name] = str(exc)
        except AssertionError as exc:
            self.failures.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any crash of the part is a failed check
            message = str(exc) if len(str(exc)) <= 1200 else str(exc)[:1200] + " [...]"
            self.failures.append(f"{name}: {type(exc).__name__}: {message}{_where(exc)}")
        else:
            self.report.passed.append(name)

    def finish(self) -> ConformanceReport:
        if self.failures:
            listing = "\n".join(f"  - {failure}" for failure in self.failures)
            raise ConformanceError(
                f"{self.report.subject} failed {len(self.failures)} conformance check(s):\n{listing}"
            )
        return self.report


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {frame.filename}:{frame.lineno}, in {frame.name})"


# -- resolving the part under test ------------------------------------------------------------------

def resolve(kind: str, part: Callable[..., Any] | str) -> tuple[Callable[..., Any], str, str | None]:
    """``(factory, subject for messages, registered name or None)`` for a factory or a registered name."""
    label = kind.replace("_", " ")
    if isinstance(part, str):
        from asczoo.plugins import get_part

        found = get_part(kind, part)
        return found.factory, f"{label} {part!r} (plugin {found.owner!r})", part
    if not callable(part):
        raise TypeError(f"expected a {label} factory or a registered name, got {type(part).__name__}")
    return part, f"{label} factory {getattr(part, '__qualname__', repr(part))}", None


def check_signature(
    factory: Callable[..., Any], options: Mapping[str, Any], *, where: str, host: Sequence[str] = ()
) -> None:
    """The options fit the factory as a recipe section would (keys, types), and the factory takes the
    host-supplied keywords."""
    from asczoo.recipes.schema import RecipeError, check_arguments

    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in host:
        if key not in params and not takes_kwargs:
            raise AssertionError(f"the factory must accept the keyword argument {key!r} (asczoo passes it)")
        if key in params and params[key].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise AssertionError(f"{key!r} must be a keyword argument, not positional-only")
    try:
        check_arguments(factory, dict(options), where=where, supplied_by_host=host)
    except RecipeError as exc:
        raise AssertionError(str(exc)) from None


def check_description(kind: str, name: str | None) -> None:
    if name is None:
        raise SkipCheck("not a registered name (pass the name to check its registration)")
    from asczoo.plugins import get_part

    if not get_part(kind, name).description:
        raise AssertionError(
            "registered without a description: give the factory a docstring (its first line is used) "
            "or pass description= to register"
        )


# -- modules and tensors ----------------------------------------------------------------------------

def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def wake(module: nn.Module, seed: int = 0) -> list[str]:
    """Give every all-zero floating parameter random values (in place); returns their names.

    Zero-initialised output scales make a fresh part the identity, which would make most checks
    vacuous; the woken module computes something that depends on every parameter.
    """
    gen = torch.Generator().manual_seed(seed)
    woken = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_floating_point() and p.numel() and not p.detach().abs().sum():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5 + 0.25)
                woken.append(name)
    return woken


def describe_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = (a.detach().double() - b.detach().double()).abs()
    return f"max abs difference {diff.max().item():.3g} (values up to {b.detach().abs().max().item():.3g})"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, *, rtol: float = 1e-4,
                 atol: float = 1e-5) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.allclose(a, e, rtol=rtol, atol=atol, equal_nan=False):
        raise AssertionError(f"{what}: {describe_diff(a, e)}")


def assert_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise AssertionError(f"{what}: {bad} of {t.numel()} values are NaN or infinite")


def assert_shape(t: Any, shape: Sequence[int], what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise AssertionError(f"{what}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def check_gradients(module: nn.Module, loss: torch.Tensor, *, inputs: Sequence[torch.Tensor] = (),
                    nonzero: bool = True) -> None:
    """After ``loss.backward()``: every trainable parameter (and each input) has a finite gradient,
    and, with ``nonzero``, not an all-zero one."""
    loss.backward()
    problems = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems.append(f"parameter {name!r} receives no gradient (is it used in forward?)")
        elif not torch.isfinite(p.grad).all():
            problems.append(f"parameter {name!r} has a NaN or infinite gradient")
        elif nonzero and not p.grad.abs().sum():
            problems.append(f"parameter {name!r} receives an all-zero gradient")
    for i, x in enumerate(inputs):
        if x.grad is None or not x.grad.abs().sum():
            problems.append(f"input {i} receives no gradient: the output does not depend on it")
        elif not torch.isfinite(x.grad).all():
            problems.append(f"input {i} has a NaN or infinite gradient")
    if problems:
        raise AssertionError("; ".join(problems))


def check_sample_independence(run: Callable[..., torch.Tensor], make: Callable[[int, int], tuple[torch.Tensor, ...]],
                              *, what: str = "sample") -> None:
    """In eval mode a sample's output must not depend on the other samples of its batch.

    ``make(batch, seed)`` gives the inputs, batch first; ``run(*inputs)`` the output, batch first.
    Sample 1 of a batch of 3 is compared with itself alone and with its neighbours replaced.
    """
    inputs = make(3, 11)
    full = run(*inputs)
    alone = run(*(x[1:2] for x in inputs))
    assert_close(alone[0], full[1], f"{what} 1 computed alone vs. in a batch of 3")
    others = make(3, 12)
    mixed = tuple(torch.cat([o[0:1], x[1:2], o[2:3]]) for x, o in zip(inputs, others))
    assert_close(run(*mixed)[1], full[1], f"{what} 1 with the other samples of its batch replaced")


def check_determinism(build: Callable[[], nn.Module], run: Callable[[nn.Module], torch.Tensor]) -> None:
    """Two builds under the same seed are identical, and one module gives the same output twice."""
    torch.manual_seed(1234)
    first = build()
    torch.manual_seed(1234)
    second = build()
    a, b = first.state_dict(), second.state_dict()
    if a.keys() != b.keys():
        raise AssertionError("two builds with the same seed have different state-dict keys")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if differ:
        raise AssertionError(f"two builds with the same seed differ in {', '.join(differ[:5])}")
    first.eval()
    with torch.no_grad():
        out1, out2 = run(first), run(first)
    if not torch.equal(out1, out2):
        raise AssertionError(
            f"the same input gives different outputs on two calls in eval mode: {describe_diff(out1, out2)}")


def woken(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``build`` followed by :func:`wake` (non-trivial weights, module left in training mode): the
    builder :func:`check_determinism` compares."""

    def make() -> nn.Module:
        module = build()
        wake(module)
        return module

    return make


def runtime_checks(
    live: Callable[[], nn.Module],
    inputs: Callable[[int], tuple[torch.Tensor, ...]],
    *,
    seed: int,
    onnx: bool | None,
    bf16_expect: Callable[[tuple[torch.Tensor, ...], torch.Tensor], tuple[Sequence[int], torch.Tensor | None]]
    | None = None,
) -> dict[str, Callable[[], None]]:
    """The runtime checks every part kind shares, by report name: ``bf16_autocast``, ``cuda`` and,
    unless ``onnx`` is ``None`` (a kind that is not exported), ``onnx`` (run only when ``onnx`` is
    true). Each builds a fresh ``live()`` module in eval mode and takes its float32 output on
    ``inputs(seed)``, ``inputs(seed + 1)`` and ``inputs(seed + 2)`` as the reference.
    ``bf16_expect(inputs, reference)`` gives the expected shape and the error scale for
    :func:`check_bf16` (default: the reference's shape and size)."""

    def reference(offset: int) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
        module, args = live(), inputs(seed + offset)
        with torch.no_grad():
            return module, args, module(*args)

    def bf16() -> None:
        module, args, ref = reference(0)
        shape, scale = bf16_expect(args, ref) if bf16_expect else (ref.shape, None)
        check_bf16(lambda: module(*args), ref, shape=shape, scale=scale)

    def cuda() -> None:
        check_cuda(*reference(1))

    def onnx_check() -> None:
        check_onnx(*reference(2), wanted=bool(onnx))

    checks = {"bf16_autocast": bf16, "cuda": cuda}
    if onnx is not None:
        checks["onnx"] = onnx_check
    return checks


def check_bf16(run: Callable[[], torch.Tensor], reference: torch.Tensor, *, shape: Sequence[int],
               scale: torch.Tensor | None = None, tolerance: float = 0.1) -> None:
    """Under CPU bfloat16 autocast the output has the right shape, is finite and stays within
    ``tolerance`` (relative to the size of ``scale``, default the reference) of the float32 result."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = run()
    assert_shape(out, shape, "output under bf16 autocast")
    if out.dtype not in (torch.float32, torch.bfloat16):
        raise AssertionError(f"output under bf16 autocast has dtype {out.dtype}")
    assert_finite(out, "output under bf16 autocast")
    if not out.numel():
        return
    size = (reference if scale is None else scale).detach().abs().max().item()
    err = (out.float() - reference.float()).abs().max().item()
    if err > tolerance * size + 1e-2:
        raise AssertionError(
            f"bf16 autocast output is {err:.3g} away from float32 (allowed {tolerance} x {size:.3g} + 0.01)"
        )


def check_cuda(module: nn.Module, inputs: Sequence[torch.Tensor], reference: torch.Tensor, *,
               loss: Callable[[torch.Tensor], torch.Tensor] = lambda y: y.float().square().mean()) -> None:
    """On CUDA (when present) the part matches its CPU output and trains (forward and backward)."""
    if not torch.cuda.is_available():
        raise SkipCheck("no CUDA device")
    gpu = copy.deepcopy(module).cuda().eval()
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # compare in full fp32
        try:
            with torch.no_grad():
                out = gpu(*(x.cuda() for x in inputs))
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    if out.device.type != "cuda":
        raise AssertionError(f"output is on {out.device}, not on the input's CUDA device")
    assert_close(out.cpu(), reference, "CUDA output vs. CPU output", rtol=1e-3, atol=1e-3)
    gpu.train()
    loss(gpu(*(x.cuda() for x in inputs))).backward()
    bad = [n for n, p in gpu.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    if bad:
        raise AssertionError(f"on CUDA, parameters without a finite gradient: {', '.join(bad[:5])}")


def check_onnx(module: nn.Module, inputs: Sequence[torch.Tensor], reference: torch.Tensor, *, wanted: bool) -> None:
    """Exports to ONNX (torch.onnx.export) and, with onnxruntime, matches the PyTorch output."""
    if not wanted:
        raise SkipCheck("ONNX support not declared (pass onnx=True)")
    import importlib.util
    import tempfile

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"onnx=True, but {', '.join(missing)} is not installed (pip install 'asczoo[export]')"
        warnings.warn(reason, ConformanceWarning, stacklevel=4)
        raise SkipCheck(reason)
    import onnxruntime

    module = copy.deepcopy(module).eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = f"{tmp}/part.onnx"
        torch.onnx.export(module, tuple(inputs), path, dynamo=True, verbose=False)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
        out = torch.from_numpy(session.run(None, feeds)[0])
    assert_close(out, reference, "onnxruntime output vs. PyTorch output", rtol=1e-3, atol=1e-4)


def check_describe(module: nn.Module) -> None:
    describe = getattr(module, "describe", None)
    if describe is None:
        raise SkipCheck("no describe() method (`asczoo info` then shows only the class name)")
    info = describe()
    if not isinstance(info, Mapping):
        raise AssertionError(f"describe() must return a mapping, got {type(info).__name__}")
    try:
        json.dumps(dict(info))
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"describe() must return JSON-serialisable values: {exc}") from None


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode, so checks never change the caller's module."""
    return copy.deepcopy(module).eval()


def isolated_rng(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a check function with the global torch RNG state saved and restored around it."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper
