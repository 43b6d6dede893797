"""The complexity figure the DCASE 2025 Task 1 organisers' tool reports, beside asczoo's own.

The CP-JKU inference template's ``complexity.py`` counts MACs with torchinfo on a float32 copy of
each ``get_model_for_device`` model and parameter bytes from the dtypes of its parameters as loaded.
torchinfo books MACs to the leaf modules that hold parameters (a convolution: parameters times output
positions; any other module: batch times parameters), so it misses every op outside such a module
(the relation blocks' kNN ``bmm``, functional matmuls) and cannot see torch's quantized modules at
all. asczoo counts the ops of the forward pass (:func:`asczoo.complexity.measure`). This module runs
the organisers' rule on the model as ``asczoo package`` ships it and names, by op, the MACs that only
asczoo sees.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from asczoo.stored_weights import held_as_stored, scheme_of

#: the template's dtype table (complexity.py: get_model_size_bytes)
_DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1,
                torch.int32: 4, torch.qint8: 1, torch.quint8: 1}
#: leaf modules whose MACs torchinfo counts the way asczoo does (weights times output positions)
_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def held_as_packaged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` as the generated package loads it (fp16 models in fp16)."""
    return held_as_stored(copy.deepcopy(model).cpu().eval())


def official_count(model: nn.Module) -> dict[str, Any]:
    """``{"available", "macs", "param_bytes", "unseen", "note"}``: the template's figures for one clip
    (batch of 1), the MACs per op that asczoo counts outside Conv/Linear modules (``unseen``), and why
    they differ; ``available`` is False (with ``note``) when torchinfo is not installed."""
    try:
        import torchinfo
    except ImportError:
        return {"available": False, "note": "torchinfo is not installed, so the organisers' figure cannot be "
                "computed here (pip install torchinfo, or asczoo[test])"}
    from asczoo.analysis.complexity import measure

    scheme = scheme_of(model)
    held = held_as_packaged(model)
    param_bytes = sum(p.numel() * _DTYPE_BYTES.get(p.dtype, p.element_size()) for p in held.parameters())
    try:
        profiled = copy.deepcopy(held).float()  # as the template does: torchinfo needs full precision
        profile = torchinfo.summary(profiled, input_size=(1, *model.input_shape), verbose=0)
        macs = int(profile.total_mult_adds)
    except Exception as exc:  # noqa: BLE001 - the organisers' tool failing is itself the finding
        return {"available": True, "macs": None, "param_bytes": param_bytes,
                "note": f"torchinfo fails on this model ({type(exc).__name__}: {exc})"}
    ours = measure(copy.deepcopy(model).cpu().float() if scheme == "fp16" else model)
    return {"available": True, "macs": macs, "param_bytes": param_bytes, "asczoo_macs": ours.macs_per_clip,
            **_differences(profiled, ours, profile, scheme)}


def _differences(model: nn.Module, ours, profile, scheme: str | None) -> dict[str, Any]:
    """Where asczoo's count and torchinfo's part, by op and by module (``model``: the copy torchinfo ran)."""
    names = {id(module): name or "(model)" for name, module in model.named_modules()}
    kinds = {name or "(model)": module for name, module in model.named_modules()}
    theirs: dict[str, int] = defaultdict(int)
    for layer in profile.summary_list:
        module = getattr(layer, "module", None)
        if module is not None and not list(module.children()):
            theirs[names.get(id(module), layer.var_name)] += int(layer.macs)
    unseen: dict[str, int] = defaultdict(int)
    counted: dict[str, int] = defaultdict(int)
    for row in ours.layers:
        if isinstance(kinds.get(row["module"]), _COUNTED):
            counted[row["module"]] += int(row["macs"])
        else:
            unseen[row["op"].removeprefix("aten.").split(".")[0]] += int(row["macs"])
    notes = []
    if scheme == "int8":
        notes.append("int8: torchinfo cannot see torch's quantized modules (no MACs for them, and their int8 "
                     "weights are not parameters), so the organisers' figure is not the model's; asczoo "
                     "package refuses int8 for this reason")
    if unseen:
        notes.append("only asczoo counts " + ", ".join(f"{op} {n / 1e6:.3f} M" for op, n in sorted(unseen.items()))
                     + " (ops outside Conv/Linear modules, not in torchinfo's figure; it books MACs to parameterised leaf modules only)")
    rows = sorted({*counted, *(n for n in theirs if isinstance(kinds.get(n), _COUNTED))})
    per_row = [n for n in rows if isinstance(kinds.get(n), nn.Linear) and counted.get(n, 0) > theirs.get(n, 0)]
    extra = sum(counted.get(n, 0) - theirs.get(n, 0) for n in per_row)
    if per_row:
        notes.append(f"Linear layers applied per row ({', '.join(per_row)}): asczoo counts rows x weights, "
                     f"torchinfo batch x parameters ({-extra:+,} MACs)")
    biases = sum(theirs.get(n, 0) - counted.get(n, 0) for n in rows if n not in per_row)
    others = sum(v for n, v in theirs.items() if not isinstance(kinds.get(n), _COUNTED))
    if biases:
        notes.append(f"conv/linear biases counted as MACs by torchinfo ({biases:+,} MACs)")
    if others:
        notes.append(f"batch-norm and other parameterised modules counted by torchinfo as batch x parameters "
                     f"({others:+,} MACs)")
    explained = ours.macs_per_clip - sum(unseen.values()) - extra + biases + others
    return {"unseen": dict(unseen), "per_row_linear": per_row, "unexplained": int(profile.total_mult_adds) - explained,
            "note": "; ".join(notes) or "the same count"}
