"""Post-training quantisation for CPU inference: static int8 (calibrated on training clips) and fp16.

Which torch path, and why. torch 2.11 keeps the int8 CPU kernels (``quantized::conv2d``,
``quantized::conv3d``, ``quantized::linear`` on the x86/fbgemm/onednn engines) and the modules that
call them (:mod:`torch.ao.nn.quantized`), but its two workflows around them are on the way out: the
eager/FX ``prepare``/``convert`` front ends of ``torch.ao.quantization`` are deprecated, and PT2E moved
to the separate ``torchao`` package (not a dependency here, and its exported graphs cannot be rebuilt
from ``config.json`` + safetensors by :func:`~asczoo.models.pretrained.from_pretrained` without exporting again).
asczoo therefore does the small part of the workflow itself, on the model as built:

1. batch norms that directly follow a convolution are folded into it
   (``torch.nn.utils.fusion.fuse_conv_bn_eval``), found by tracing one forward pass;
2. every ``Conv2d``/``Conv3d``/``Linear`` gets min/max observers on its input and output, and
   calibration clips of the training split run through the model;
3. each of those layers becomes a :class:`QuantizedLayer`: int8 weights, symmetric per output
   channel, uint8 activations (affine, 7-bit range: the x86/fbgemm engine's ``reduce_range`` that
   avoids overflow in its 16-bit accumulation on CPUs without VNNI), run by the quantized module; the
   rest (pooling, activations, residual sums) stays in float between them.

The int8 weights, their scales and the activation scales are plain tensors in the state dict, so the
model saves as safetensors; ``config.json``'s ``quantization`` entry names the folded pairs and the
quantized layers, from which :func:`restore` rebuilds the structure before the weights load.

Parts that cannot be quantised are refused by name: a part whose parameters are used by functional
ops (the relation blocks' kNN ``bmm``, the pair encoder's fused matmuls) has no int8 module to swap
in. ``keep_float`` keeps such parts in float32 (mixed precision; their bytes count at 4 per parameter).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from asczoo.analysis.complexity import measure
from asczoo.stored_weights import (  # noqa: F401  (the stored form: part of this tool's API too)
    QUANTIZABLE, SCHEMES, QuantizationError, QuantizedLayer, fold_batch_norms, loaded_state, replace_module, restore, stored_state,
)


#: parameterised modules that may stay in float inside a quantised model (cheap, element-wise)
FLOAT_OK = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


# -- structure --------------------------------------------------------------------------------------------

def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(conv, batch norm)`` paths where the norm's input is the convolution's output tensor itself,
    from one traced forward pass in eval mode."""
    names = {m: n for n, m in model.named_modules()}
    last: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def after_conv(module, _args, out):
        last["conv"], last["out"] = names[module], out

    def before_bn(module, args):
        if last.get("out") is not None and args and args[0] is last["out"]:
            pairs.append((last["conv"], names[module]))

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(pairs))


def _inside(path: str, parts: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in parts)


def check_quantizable(model: nn.Module, keep_float: Sequence[str] = ()) -> list[str]:
    """Paths of the layers to quantise; raises :class:`QuantizationError` naming the first part that
    cannot be (a relation block, or any module whose parameters no int8 module can take over)."""
    for part in keep_float:
        try:
            model.get_submodule(part)
        except AttributeError:
            raise QuantizationError(f"--keep-float {part!r}: the model has no part of that name") from None
    relations = getattr(model, "relations", None)
    if relations is not None:
        for placement, block in relations.items():
            path = f"relations.{placement}"
            if not _inside(path, keep_float):
                raise QuantizationError(
                    f"{path} ({type(block).__name__}) cannot be quantised to int8: its kNN distances (bmm, topk) "
                    "and pair-encoder matmuls are functional ops on the block's weights, and torch's int8 engine "
                    "only has conv/linear modules to swap in; keep it in float with --keep-float relations "
                    "(its parameters then count at 4 bytes each)")
    leaves = []
    for path, module in model.named_modules():
        if not path or _inside(path, keep_float):
            continue
        if isinstance(module, QUANTIZABLE):
            leaves.append(path)
            continue
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own and not isinstance(module, FLOAT_OK):
            raise QuantizationError(
                f"{path} ({type(module).__name__}) holds parameters {own} used outside conv/linear layers; "
                "torch's int8 engine has no kernel for it: keep it in float with --keep-float " + path)
    return leaves


def _leaves_under(model: nn.Module, keep_float: Sequence[str]) -> list[str]:
    return [p for p, m in model.named_modules() if p and isinstance(m, QUANTIZABLE) and not _inside(p, keep_float)]


# -- int8 and fp16 ------------------------------------------------------------------------------------------

@dataclass
class QuantizationResult:
    model: nn.Module
    layers: list[str]
    folded: list[tuple[str, str]]


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor], *, keep_float: Sequence[str] = ()) -> QuantizationResult:
    """A static int8 copy of ``model`` (left untouched), calibrated on the batches in ``calibration``."""
    float_complexity = measure(model) if hasattr(model, "input_shape") else None
    check_quantizable(model, keep_float)
    q = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, *q.input_shape)
    folded = [(c, b) for c, b in conv_bn_pairs(q, example) if not _inside(c, keep_float)]
    fold_batch_norms(q, folded)
    leaves = _leaves_under(q, keep_float)
    ranges: dict[str, list[float]] = {p: [float("inf"), float("-inf"), float("inf"), float("-inf")] for p in leaves}
    handles = []
    for path in leaves:
        def observe(_m, args, out, path=path):
            r = ranges[path]
            r[0], r[1] = min(r[0], float(args[0].min())), max(r[1], float(args[0].max()))
            r[2], r[3] = min(r[2], float(out.min())), max(r[3], float(out.max()))
        handles.append(q.get_submodule(path).register_forward_hook(observe))
    seen = 0
    try:
        with torch.no_grad():
            for batch in calibration:
                q(batch.float().cpu())
                seen += batch.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError("int8 calibration needs at least one clip; the calibration set is empty")
    for path in leaves:
        layer = q.get_submodule(path)
        quantized = QuantizedLayer(layer)
        quantized.set_from(layer, tuple(ranges[path][:2]), tuple(ranges[path][2:]))
        replace_module(q, path, quantized)
    q.quantization = {
        "scheme": "int8", "folded": [list(p) for p in folded], "layers": leaves, "keep_float": list(keep_float),
        "calibration_clips": seen,
        "float_macs_per_clip": float_complexity.macs_per_clip if float_complexity else None,
    }
    return QuantizationResult(q, leaves, folded)


def quantize_fp16(model: nn.Module) -> nn.Module:
    """A copy whose floating-point parameters are stored as fp16 (they load back into fp32 to run on the CPU)."""
    macs = measure(model).macs_per_clip if hasattr(model, "input_shape") else None
    q = copy.deepcopy(model).cpu().eval()
    for p in q.parameters():
        p.data = p.data.half().float()  # the values fp16 can hold; saved as fp16 by :func:`stored_state`
    q.quantization = {"scheme": "fp16", "float_macs_per_clip": macs}
    return q


def parity(float_model: nn.Module, quantized: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Accuracy of both models and their agreement (same predicted class) on labelled batches."""
    float_model = float_model.cpu().eval()
    quantized = quantized.cpu().eval()
    correct_f = correct_q = agree = total = 0
    max_diff = 0.0
    with torch.no_grad():
        for x, y in batches:
            x = x.float().cpu()
            lf, lq = float_model(x), quantized(x)
            pf, pq = lf.argmax(1), lq.argmax(1)
            correct_f += int((pf == y).sum())
            correct_q += int((pq == y).sum())
            agree += int((pf == pq).sum())
            total += x.shape[0]
            max_diff = max(max_diff, float((lf - lq).abs().max()))
    if not total:
        raise ValueError("parity report: the validation split is empty")
    return {"clips": total, "float_accuracy": correct_f / total, "quantized_accuracy": correct_q / total,
            "agreement": agree / total, "max_logit_difference": max_diff}
