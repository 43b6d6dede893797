"""Model complexity as DCASE Task 1 counts it: parameters, parameter bytes, multiply-accumulates.

The MACs come from the model's real forward pass under torch's own operator counter
(:class:`torch.utils.flop_counter.FlopCounterMode`), not from a hand formula, so whatever a plugin
computes is counted as it runs: convolutions, linear layers, and the relation blocks' kNN ``bmm``
and pair MLPs alike. FlopCounterMode counts a multiply-add as two FLOPs for the ops it knows
(convolutions, ``mm``/``addmm``/``bmm``/``baddbmm``, attention); MACs are FLOPs / 2. Element-wise
ops (activations, normalisation, pooling) are not counted, as in the DCASE complexity calculation
(which counts the MACs of convolution and linear layers, via torchinfo/NeSsi).

A plugin op registered with ``torch.library.custom_op`` is opaque to the counter: give it a formula
with :func:`register_macs_formula` (or ``torch.utils.flop_counter.register_flop_formula``) or it
counts as zero.

Limits (DCASE 2024 and 2025 Task 1): at most 128 kB of parameter memory (128 * 1024 bytes, the
challenge rules' "128 kB" with parameters counted at their stored precision) and at most 30 million
MACs per second of audio (a 1 s clip in the challenge data set).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from asczoo.stored_weights import is_weight, stored_parameter_bytes, stored_state

#: bytes per parameter at each precision ``asczoo complexity --precision`` knows
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
#: DCASE 2024/2025 Task 1 limits
DCASE_MAX_PARAM_BYTES = 128 * 1024
DCASE_MAX_MACS_PER_SECOND = 30_000_000


@dataclass
class Complexity:
    """What :func:`measure` found; ``layers`` lists ``(module, op, MACs)`` with each op counted once."""

    parameters: int
    precision: str
    parameter_bytes: int
    macs_per_clip: int
    clip_seconds: float | None
    macs_per_second: float | None
    layers: list[dict[str, Any]] = field(default_factory=list)
    source: str = "float model (counted before quantising)"

    @property
    def dcase_limits(self) -> dict[str, Any]:
        """Whether the DCASE 2024/2025 limits hold (``None`` for MACs when the clip length is unknown)."""
        macs_ok = None if self.macs_per_second is None else self.macs_per_second <= DCASE_MAX_MACS_PER_SECOND
        bytes_ok = self.parameter_bytes <= DCASE_MAX_PARAM_BYTES
        return {
            "max_parameter_bytes": DCASE_MAX_PARAM_BYTES,
            "max_macs_per_second": DCASE_MAX_MACS_PER_SECOND,
            "parameter_bytes_ok": bytes_ok,
            "macs_ok": macs_ok,
            "holds": bool(bytes_ok and macs_ok),
        }

    def to_dict(self, layers: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not layers:
            out.pop("layers")
        out["dcase_limits"] = self.dcase_limits
        return out

    def summary(self) -> str:
        """Two lines for ``asczoo info`` and the model card."""
        limits = self.dcase_limits
        per_second = "n/a" if self.macs_per_second is None else f"{self.macs_per_second / 1e6:.3f} M"
        verdict = "hold" if limits["holds"] else "do not hold"
        return (f"{self.parameters:,} parameters = {self.parameter_bytes / 1024:.1f} kB at {self.precision}; "
                f"{self.macs_per_clip / 1e6:.3f} M MACs per clip ({per_second} per second of audio)\n"
                f"DCASE 2024/2025 limits (128 kB, 30 M MACs/s): {verdict}")


def register_macs_formula(op) -> Callable:
    """Decorator: ``formula(*args, out_val=None, **kwargs) -> MACs`` for a custom op the counter cannot
    see into (the formula receives the op's arguments; counted as 2 FLOPs per MAC)."""
    def wrap(formula: Callable) -> Callable:
        @register_flop_formula(op, get_raw=True)
        def flops(*args, out_val=None, **kwargs):
            return 2 * int(formula(*args, out_val=out_val, **kwargs))

        return formula

    return wrap


class _LayerCounter(FlopCounterMode):
    """FlopCounterMode that also books each op's FLOPs to the innermost module running it.

    FlopCounterMode's own per-module table adds an op to every enclosing module, so a relation
    block that runs inside a backbone block's forward hook appears under both; a table whose rows
    sum to the total needs the innermost owner. ``_count_flops`` is FlopCounterMode's per-op
    callback (torch 2.4 to 2.11); the test that the rows sum to the total guards it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(display=False)
        self.stack: list[str] = []
        self.by_layer: dict[tuple[str, str], int] = defaultdict(int)
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name or "(model)")))
            self.handles.append(module.register_forward_hook(self._leave(name or "(model)"), always_call=True))

    def _enter(self, name: str):
        def hook(_m, _a):
            self.stack.append(name)
        return hook

    def _leave(self, name: str):
        def hook(_m, _a, _o):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
        return hook

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            owner = self.stack[-1] if self.stack else "(model)"
            self.by_layer[(owner, str(func_packet))] += int(flops)
        return super()._count_flops(func_packet, out, args, kwargs)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(model: nn.Module, *, precision: str = "fp32", input_shape=None,
            clip_seconds: float | None = None) -> Complexity:
    """Count ``model``'s parameters and the MACs of one forward pass on one clip (batch of 1).

    ``input_shape`` (without the batch) defaults to the model's ``input_shape``; ``clip_seconds``
    to its frontend's ``clip_seconds``. The model runs in eval mode under ``no_grad`` on the CPU and is
    left in the mode it was in.
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISION_BYTES)}")
    shape = tuple(input_shape or getattr(model, "input_shape"))
    if clip_seconds is None:
        clip_seconds = (getattr(model, "frontend_config", None) or {}).get("clip_seconds")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    counter = _LayerCounter(model)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, *shape, device=device))
    finally:
        counter.remove()
        model.train(was_training)
    macs = counter.get_total_flops() // 2
    layers = [{"module": name, "op": op, "macs": flops // 2}
              for (name, op), flops in counter.by_layer.items() if flops]
    params = _parameter_count(model)
    param_bytes = params * PRECISION_BYTES[precision]
    source = "float model (counted before quantising)"
    quantization = getattr(model, "quantization", None)
    if quantization:
        # a quantised model (asczoo.deploy.quantize): the int8 kernels are opaque to the counter, so the MACs
        # are the float model's, counted before quantising; the bytes are those of the stored tensors
        macs = int(quantization.get("float_macs_per_clip") or macs)
        state = stored_state(model)
        params = sum(t.numel() for k, t in state.items() if is_weight(k, t))
        param_bytes = stored_parameter_bytes(state)
        precision = quantization["scheme"] if quantization["scheme"] != "int8" else "int8 (stored)"
        source = f"stored {quantization['scheme']} tensors; MACs of the float model"
    return Complexity(
        parameters=params, precision=precision, parameter_bytes=param_bytes,
        macs_per_clip=int(macs), clip_seconds=float(clip_seconds) if clip_seconds else None,
        macs_per_second=(macs / float(clip_seconds)) if clip_seconds else None, layers=layers, source=source,
    )


def format_table(result: Complexity) -> str:
    """The per-layer table: module, op, MACs and share of the total, in forward order."""
    total = max(result.macs_per_clip, 1)
    width = max([len(r["module"]) for r in result.layers] + [6])
    lines = [f"{'module':<{width}}  {'op':<12} {'MACs':>14} {'share':>7}"]
    for row in result.layers:
        lines.append(f"{row['module']:<{width}}  {row['op'].removeprefix('aten.'):<12} {row['macs']:>14,} "
                     f"{100 * row['macs'] / total:>6.2f}%")
    return "\n".join(lines)
