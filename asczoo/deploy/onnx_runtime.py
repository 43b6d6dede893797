"""``asczoo predict --backend onnxruntime``: a model's ONNX export, run by onnxruntime on the CPU.

:func:`onnx_runtime_model` exports the model (:func:`asczoo.deploy.export.export_onnx`, dynamic batch,
verified against PyTorch at batches 1, 2, 3 and 7 before it is used) into a temporary folder and
returns an :class:`OnnxRuntimeModel`. That object has what :func:`asczoo.inference.predict_files`
needs of a model (``classes``, ``frontend_config``, ``task``, ``activation``, ``input_shape``, a forward
pass on ``(B, N, 3, F, T)`` features), so the frontend, the windows and the outputs are the ones that
``asczoo predict`` computes with PyTorch; only the network runs elsewhere.

When it pays (``benchmarks/RESULTS.md``, 2 CPU cores): for the plain 3D ResNet-18 at batch 16,
onnxruntime took 459 ms where PyTorch took 721 ms (1.57x faster). For ATReSN-Net it was no faster
(1182 against 1196 ms at batch 16, and slower at batch 1: 72 against 56 ms), since its kNN
top-k runs slower there. The export itself costs 15-40 s at the start. The backend is meant for
folders of many clips with the plain models, and for machines where PyTorch's CPU kernels are slow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


class OnnxRuntimeModel(nn.Module):
    """An exported model run by onnxruntime's CPU provider, standing in for the PyTorch model in
    :func:`asczoo.inference.predict_files` (logits out, as the PyTorch model gives them)."""

    def __init__(self, model: Any, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime

        super().__init__()
        self.name, self.classes, self.num_classes = model.name, list(model.classes), len(model.classes)
        self.frontend_config = dict(model.frontend_config)
        self.input_shape = tuple(model.input_shape)
        self.task = getattr(model, "task", "single-label")
        self.activation = getattr(model, "activation", "softmax")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # idle onnxruntime threads spin by default, taking the cores the frontend (PyTorch) needs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self._input: x})[0])


def onnx_runtime_model(model: Any, *, say: Callable[[str], None] | None = None) -> OnnxRuntimeModel:
    """``model`` exported to ONNX (verified) and loaded into onnxruntime; the file lives only as long as
    the session needs it to be read (onnxruntime holds the graph in memory afterwards)."""
    import time

    try:
        import onnxruntime  # noqa: F401 - a clear message before a long export
    except ImportError:
        raise ImportError("--backend onnxruntime needs onnxruntime and onnx: pip install 'asczoo[export]'") from None
    from asczoo.deploy.export import export_onnx

    if getattr(model, "quantization", None):
        raise ValueError("--backend onnxruntime runs float models; this one is quantised (run it with the torch "
                         "backend, or export the float model)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="asczoo-onnxruntime-") as tmp:
        result = export_onnx(model.cpu().eval(), Path(tmp) / "model.onnx", dynamic_batch=True)
        runner = OnnxRuntimeModel(model, result.path)
    if say is not None:
        say(f"onnxruntime: {model.name} exported and verified (max difference {result.max_abs_diff:.1e}) in "
            f"{time.perf_counter() - start:.1f} s")
    return runner
