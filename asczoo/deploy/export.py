"""ONNX export: ``export_onnx(model, path)`` and ``asczoo export MODEL --format onnx OUT.onnx``.

The exported graph is the model itself, ``features (B, N, 3, F, T) -> logits (B, classes)``, with the
training-set normalisation inside. The frontend (resampling, STFT, mel filter bank) is not part of it:
its configuration, the class names and the input shape are stored in the ONNX metadata
(``asczoo.frontend``, ``asczoo.classes``, ``asczoo.input_shape``) so that a runtime can rebuild it.

Export captures the model with ``torch.export`` (a dynamic batch axis by default, no fallback that could
turn it into the traced size), converts it with PyTorch's ONNX exporter, checks the graph with
onnxruntime against PyTorch at batches 1, 2, 3 and 7, and only then writes the file (atomically). When export fails, each relation
block, the backbone and the head are exported on their own to find the part that cannot be
exported, and the error names it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from asczoo.version import __version__

DEFAULT_OPSET = 18
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
FORMATS = ("onnx",)


class ExportError(RuntimeError):
    """A model (or one of its parts, named in the message) could not be exported or verified."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where the file went and, when verified, the largest |onnxruntime - PyTorch| logit difference."""

    path: Path
    max_abs_diff: float | None


#: batch sizes a dynamic-batch export is checked at: 1, the traced 2, an odd 3 and a 7 past both
VERIFY_BATCHES = (1, 2, 3, 7)


def export_onnx(
    model,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    optimize: bool = True,
    verify: bool = True,
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` to an ONNX file at ``path``, written only once it is complete and verified.

    Args:
        opset: ONNX opset version.
        dynamic_batch: make the batch axis dynamic (otherwise the file takes batches of 2). The graph
            is captured by ``torch.export`` with the batch as a symbolic size and no fallback, so an
            export that would hold for the traced batch only (a size computed from the batch and
            baked in) fails here with :class:`ExportError`, verified or not.
        optimize: run the ONNX graph optimiser (constant folding, fusion) after export.
        verify: run the graph with onnxruntime on random features at every batch of
            :data:`VERIFY_BATCHES` (dynamic batch; 2 otherwise) and require every logit within ``atol``
            of PyTorch's (scaled by the largest logit magnitude when that exceeds 1) (skipped, with a warning, if onnxruntime is not installed). A graph that fails
            is not written: ``path`` is left as it was.
    """
    _require("onnx", "onnxscript")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        example = _features(model, batch=2, seed=0)
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        try:
            program = _torch_export(model, example, opset=opset, optimize=optimize, dynamic_shapes=dynamic_shapes)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: find the part responsible
            raise ExportError(_explain_failure(model, example, exc, opset=opset,
                                               dynamic_batch=dynamic_batch)) from exc
        proto = program.model_proto
        _add_metadata(proto, model)
        data = proto.SerializeToString()
        diff = None
        if verify:
            if importlib.util.find_spec("onnxruntime") is None:
                warnings.warn("onnxruntime is not installed; the exported file was not verified", RuntimeWarning,
                              stacklevel=2)
            else:
                diff = verify_onnx(model, data, batches=VERIFY_BATCHES if dynamic_batch else (2,), atol=atol,
                                   name=path)
        from asczoo.atomic import atomic_write

        with atomic_write(path, "wb") as f:
            f.write(data)
        return ExportResult(path, diff)
    finally:
        model.train(was_training)


def verify_onnx(model, source: str | os.PathLike | bytes, *, batches: tuple[int, ...] = VERIFY_BATCHES,
                atol: float = 1e-4, seed: int = 1, name: str | os.PathLike | None = None) -> float:
    """Run an ONNX file (path, or its bytes) with onnxruntime (CPU) on random features at each of
    ``batches``; return the largest logit difference to PyTorch, raising :class:`ExportError` (naming
    the batch) if onnxruntime fails or a difference exceeds ``atol`` times the largest logit
    magnitude (at least 1)."""
    import onnxruntime

    label = name if name is not None else ("the exported graph" if isinstance(source, bytes) else source)
    session = onnxruntime.InferenceSession(source if isinstance(source, bytes) else str(source),
                                           providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        features = _features(model, batch=batch, seed=seed + batch)
        with torch.no_grad():
            expected = model(features).float().cpu()
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: features.cpu().numpy()})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{label}: verification failed at batch {batch}: onnxruntime cannot run the "
                              f"exported {model.name} ({first}); nothing was written") from exc
        got = torch.from_numpy(got)
        if got.shape != expected.shape:
            raise ExportError(f"{label}: verification failed at batch {batch}: onnxruntime returned logits of "
                              f"shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}; nothing was written")
        diff = float((got - expected).abs().max())
        # atol is for logits of order 1; larger logits carry proportionally larger float32 rounding
        allowed = atol * max(1.0, float(expected.abs().max()))
        if not diff <= allowed:
            raise ExportError(
                f"{label}: verification failed at batch {batch}: onnxruntime and PyTorch logits differ by up to "
                f"{diff:.3g} (allowed {allowed:.3g}) for {model.name}; nothing was written"
            )
        worst = max(worst, diff)
    return worst


def _features(model, *, batch: int, seed: int) -> torch.Tensor:
    """Random clip features shaped like the model's input, on the model's device."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    return torch.randn(batch, *model.input_shape, generator=generator).to(device)


def _torch_export(module, example: torch.Tensor, *, opset: int, optimize: bool, dynamic_shapes=None,
                  input_name: str = INPUT_NAME):
    """``torch.export`` (non-strict, no fallback), then the ONNX exporter on that program.

    ``torch.onnx.export`` given a module falls back, when capture fails, to strategies that may turn a
    dynamic axis into the traced size without a word (``draft_export``); capturing first means a
    batch axis that cannot stay dynamic is an error here instead of a file that only takes batch 2.
    """
    with warnings.catch_warnings():
        # the exporter's own deprecation and tracing notices are not actionable for asczoo users
        warnings.simplefilter("ignore", category=(DeprecationWarning, FutureWarning, UserWarning))
        captured = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        return torch.onnx.export(
            captured, (example,), dynamo=True, input_names=[input_name], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=optimize, verbose=False,
            report=False, custom_translation_table=onnx_translation_table(),
        )


def _add_metadata(proto, model) -> None:
    entries = {
        "asczoo.version": __version__,
        "asczoo.name": model.name + (f".{model.tag}" if model.tag else ""),
        "asczoo.classes": json.dumps(list(model.classes)),
        "asczoo.input_shape": json.dumps(list(model.input_shape)),
        "asczoo.frontend": json.dumps(model.frontend_config),
    }
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.doc_string = (
        f"asczoo {model.name}: clip features {INPUT_NAME} (batch, {', '.join(map(str, model.input_shape))}) "
        f"from the frontend in metadata 'asczoo.frontend' -> {OUTPUT_NAME} (batch, {model.num_classes})"
    )


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'asczoo[export]'")


# -- finding the part that cannot be exported ----------------------------------------------------------


def _explain_failure(model, example: torch.Tensor, error: BaseException, *, opset: int,
                     dynamic_batch: bool = False) -> str:
    recipe = model.recipe
    relation_plugin = (recipe.get("relation") or {}).get("plugin")
    backbone = (recipe.get("backbone") or {}).get("plugin")
    inflator = (recipe.get("inflator") or {}).get("plugin")
    head = (recipe.get("head") or {}).get("plugin")
    parts = [(f"relation block {placement!r} (plugin {relation_plugin!r})", block)
             for placement, block in model.relations.items()]
    parts += [
        (f"backbone (plugin {backbone!r}, inflated by {inflator!r})", model.backbone),
        (f"head (plugin {head!r})", model.head),
    ]
    inputs: dict[int, tuple] = {}
    handles = [module.register_forward_pre_hook(lambda m, args, i=i: inputs.setdefault(i, args))
               for i, (_, module) in enumerate(parts)]
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001
        return f"cannot export {model.name} to ONNX: the model fails on example features: {_root_cause(exc)}"
    finally:
        for handle in handles:
            handle.remove()
    for i, (label, module) in enumerate(parts):
        if i not in inputs:
            continue
        try:
            _torch_export(module, *inputs[i], opset=opset, optimize=False)
        except Exception as exc:  # noqa: BLE001
            return f"cannot export {model.name} to ONNX: its {label} cannot be exported: {_root_cause(exc)}"
    if dynamic_batch and _is_batch_specialisation(error):
        return (f"cannot export {model.name} to ONNX with a dynamic batch axis: the model computes a fixed "
                f"size from the batch size ({_root_cause(error)}); export with --static-batch")
    return (
        f"cannot export {model.name} to ONNX (its relation blocks, backbone and head export on their own, "
        f"so the failure is in how they are combined): {_root_cause(error)}"
    )


def _is_batch_specialisation(error: BaseException) -> bool:
    """Whether ``torch.export`` failed because the symbolic batch size had to become a constant."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if "Constraints violated" in str(error) or type(error).__name__ == "ConstraintViolationError":
            return True
        error = error.__cause__ or error.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's type and first lines: the exporter wraps the useful message."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    lines = [line for line in str(exc).strip().splitlines() if line.strip()][:3]
    text = " ".join(lines)
    return f"{type(exc).__name__}: {text[:400]}"


# -- translations for aten ops the exporter lowers badly -----------------------------------------------


def onnx_translation_table() -> dict[Any, Any]:
    """ONNX implementations handed to the exporter for aten ops it otherwise decomposes badly.

    ``aten.diagonal_scatter`` (from in-place writes to a diagonal, as when :func:`asczoo.ops.semantic_knn`
    masks each point itself in a block without segment exclusion) has no ONNX implementation in torch 2.11's library,
    and its fallback decomposition leaves a non-functional ``copy_to`` that breaks export.
    """
    return {torch.ops.aten.diagonal_scatter.default: _diagonal_scatter}


def _diagonal_scatter(self, src, offset: int = 0, dim1: int = 0, dim2: int = 1):
    """``torch.diagonal_scatter`` as ONNX: ``Where(diagonal mask, src laid out on the diagonal, self)``."""
    import onnx
    from onnxscript import opset18 as op

    rank = len(self.shape)
    dim1, dim2 = dim1 % rank, dim2 % rank
    shape = op.Shape(self)
    n1 = op.Gather(shape, op.Constant(value_ints=[dim1]), axis=0)
    n2 = op.Gather(shape, op.Constant(value_ints=[dim2]), axis=0)
    # mask[i, j] is true where j - i == offset (i along dim1, j along dim2), reshaped to broadcast
    eye = op.Cast(op.EyeLike(op.ConstantOfShape(op.Concat(n1, n2, axis=0)), k=offset), to=onnx.TensorProto.BOOL)
    if dim1 > dim2:
        eye = op.Transpose(eye, perm=[1, 0])
    sizes = [op.Constant(value_ints=[1])] * rank
    sizes[dim1], sizes[dim2] = n1, n2
    mask = op.Reshape(eye, op.Concat(*sizes, axis=0))
    # src is (other dims..., L): diagonal element l sits at index l + max(0, -offset) along dim1; pad
    # that axis to n1, append a size-1 axis for dim2, then move both axes into place
    start = max(0, -offset)
    pad_end = op.Sub(op.Sub(n1, op.Shape(src, start=-1)), op.Constant(value_ints=[start]))
    zeros = [op.Constant(value_ints=[0] * (rank - 2))] if rank > 2 else []
    pads = op.Concat(*zeros, op.Constant(value_ints=[start]), *zeros, pad_end, axis=0)
    values = op.Unsqueeze(op.Pad(src, pads), op.Constant(value_ints=[rank - 1]))
    order = [d for d in range(rank) if d not in (dim1, dim2)] + [dim1, dim2]
    values = op.Transpose(values, perm=[order.index(d) for d in range(rank)])
    return op.Where(mask, values, self)
