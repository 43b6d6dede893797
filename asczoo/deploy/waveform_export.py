"""ONNX from waveform to logits: the frontend inside the graph (``asczoo export --with-frontend``).

A model exported on its own (:mod:`asczoo.deploy.export`) starts from clip features, leaving the runtime to
rebuild the STFT and the mel filter bank. :class:`WaveformModel` puts the resampling-free part of the
``dcase-logmel`` frontend in front of the model, in operators every ONNX runtime has:

* left, right and left minus right (mono input is duplicated to both sides, as the frontend does);
* the centred STFT as a strided 1-D convolution with Hann-windowed cosine and sine kernels (one
  output channel per FFT bin and part: the DFT written out, exact in real arithmetic), after the
  frontend's centre padding (``reflect`` or ``constant``);
* the power spectrum, the HTK mel filter bank (``asczoo.dsp``'s, as the frontend builds it), the log
  with the frontend's ``log_offset`` (as ``log(offset) + log1p(mel / offset)``: the ONNX optimiser
  removes an addition of a constant as small as 1e-8);
* the segments cut at the frontend's frame offsets (:func:`asczoo.data.frontend.segment_starts`);
* the model itself, whose training-set normalisation is inside it.

The graph takes ``waveform (batch, channels, samples)`` float32 at the model's sample rate, exactly
one clip long (the frontend's ``clip_seconds``): resample and pad or cut before (the metadata key
``asczoo.waveform`` says the rate, channels and samples). The batch axis is dynamic.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from asczoo import dsp
from torch import nn

from asczoo.data.frontend import segment_starts

INPUT_NAME = "waveform"
LOGMEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "segments", "segment_frames",
               "clip_seconds", "log_offset", "pad_mode")


class LogMelGraph(nn.Module):
    """``(B, channels, clip samples)`` -> ``(B, N, 3, n_mels, segment_frames)``, the ``dcase-logmel``
    features of a clip, in export-friendly operators (see the module docstring)."""

    def __init__(self, config: dict[str, Any], *, channels: int = 2) -> None:
        super().__init__()
        missing = [k for k in LOGMEL_KEYS if k not in config]
        if missing:
            raise ValueError(f"the frontend {config.get('plugin')!r} has no {', '.join(missing)} in its configuration; "
                             "--with-frontend knows the dcase-logmel frontend's log-mel pipeline only")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 (mono, duplicated to both sides) or 2, got {channels}")
        self.channels = channels
        #: a frontend made for mono recordings mixes stereo input to mono first (dcase-logmel's ``channels``)
        self.mix_to_mono = int(config.get("channels", 2)) == 1
        self.sample_rate = int(config["sample_rate"])
        self.n_fft, self.hop = int(config["n_fft"]), int(config["hop_length"])
        self.samples = int(round(float(config["clip_seconds"]) * self.sample_rate))
        self.pad_mode = str(config["pad_mode"])
        self.log_offset = float(config["log_offset"])
        bins = self.n_fft // 2 + 1
        n = torch.arange(self.n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(k, n) / self.n_fft
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 * bins, n_fft)
        self.register_buffer("dft", kernels.float().unsqueeze(1), persistent=False)
        top = self.sample_rate / 2 if config["f_max"] is None else float(config["f_max"])
        fbank = dsp.melscale_fbanks(bins, float(config["f_min"]), top, int(config["n_mels"]), self.sample_rate,
                                    norm=None, mel_scale="htk").T.contiguous()  # (M, bins)
        self.register_buffer("fbank", fbank, persistent=False)
        frames = 1 + self.samples // self.hop
        starts = segment_starts(frames, int(config["segments"]), int(config["segment_frames"]))
        index = starts[:, None] + torch.arange(int(config["segment_frames"]))
        self.register_buffer("index", index.reshape(-1), persistent=False)
        self.segments, self.segment_frames = int(config["segments"]), int(config["segment_frames"])

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        batch = waveform.shape[0]
        if self.channels == 2 and self.mix_to_mono:
            waveform = waveform.mean(dim=1, keepdim=True)
        x = waveform.expand(-1, 2, -1) if self.channels == 1 or self.mix_to_mono else waveform
        three = torch.stack([x[:, 0], x[:, 1], x[:, 0] - x[:, 1]], dim=1).reshape(batch * 3, 1, self.samples)
        half = self.n_fft // 2
        three = nn.functional.pad(three, (half, half), mode="reflect" if self.pad_mode == "reflect" else "constant")
        spec = nn.functional.conv1d(three, self.dft, stride=self.hop)  # (B*3, 2 * bins, frames)
        bins = self.dft.shape[0] // 2
        power = spec[:, :bins].square() + spec[:, bins:].square()
        # log(mel + offset) written as log(offset) + log1p(mel / offset): the ONNX optimiser drops the
        # addition of a constant as small as 1e-8 (silence would become -inf)
        mel = torch.matmul(self.fbank, power)  # (B*3, M, frames)
        logmel = torch.log1p(mel * (1.0 / self.log_offset)) + math.log(self.log_offset)
        segments = logmel.index_select(2, self.index).reshape(batch, 3, -1, self.segments, self.segment_frames)
        return segments.permute(0, 3, 1, 2, 4)


class WaveformModel(nn.Module):
    """``waveform (B, channels, samples)`` -> ``logits (B, classes)``: :class:`LogMelGraph`, then the model."""

    def __init__(self, model: nn.Module, *, channels: int = 2) -> None:
        super().__init__()
        self.frontend = LogMelGraph(model.frontend_config, channels=channels)
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend(waveform))

    def check(self, waveform: torch.Tensor) -> None:
        """The error the exported graph's input description gives, raised in PyTorch."""
        want = (self.frontend.channels, self.frontend.samples)
        if waveform.dim() != 3 or tuple(waveform.shape[1:]) != want:
            raise ValueError(
                f"expected a waveform (batch, {want[0]}, {want[1]}): {want[0]} channel(s), "
                f"{want[1]} samples = one clip at {self.frontend.sample_rate} Hz; got {tuple(waveform.shape)}")


def waveform_metadata(wrapper: WaveformModel) -> dict[str, str]:
    """The ``asczoo.waveform`` metadata entry: what the graph's input must be."""
    f = wrapper.frontend
    return {"asczoo.waveform": json.dumps({
        "input": INPUT_NAME, "shape": ["batch", f.channels, f.samples], "sample_rate": f.sample_rate,
        "seconds": f.samples / f.sample_rate, "dtype": "float32",
        "note": "resample to sample_rate and pad/cut to the clip length first; mono is (batch, 1, samples)",
    })}


def export_onnx_with_frontend(model, path: str | os.PathLike, *, channels: int = 2, opset: int | None = None,
                              optimize: bool = True, verify: bool = True, atol: float = 1e-4):
    """Export waveform -> logits (see the module docstring) to ``path``. As :func:`asczoo.deploy.export.export_onnx`
    does, the batch axis is captured as dynamic with no fallback, the graph is checked with onnxruntime
    at :data:`asczoo.deploy.export.VERIFY_BATCHES` against the model and its own PyTorch frontend, and only
    then written (atomically)."""
    from asczoo.deploy import export

    path = Path(path)
    was_training = model.training
    model.eval()
    wrapper = WaveformModel(model, channels=channels).eval()
    try:
        example = example_waveforms(wrapper, batch=2, seed=0)
        dynamic = ({0: torch.export.Dim("batch", min=1)},)
        try:
            program = torch_export(wrapper, example, opset=opset or export.DEFAULT_OPSET, optimize=optimize,
                                   dynamic_shapes=dynamic)
        except Exception as exc:  # noqa: BLE001
            raise export.ExportError(f"cannot export {model.name} with its frontend to ONNX: "
                                     f"{export._root_cause(exc)}") from exc
        proto = program.model_proto
        add_metadata(proto, model, wrapper)
        data = proto.SerializeToString()
        diff = None
        if verify:
            diff = max(verify_with_frontend(model, data, batch=b, atol=atol, channels=channels, name=path)
                       for b in export.VERIFY_BATCHES)
        from asczoo.atomic import atomic_write

        with atomic_write(path, "wb") as f:
            f.write(data)
        return export.ExportResult(path, diff)
    finally:
        model.train(was_training)


def torch_export(module: nn.Module, example: torch.Tensor, *, opset: int, optimize: bool, dynamic_shapes=None,
                 input_name: str = INPUT_NAME):
    """:mod:`asczoo.deploy.export`'s capture and conversion (``torch.export``, no fallback, asczoo's
    translation table) with the graph input named ``waveform``."""
    from asczoo.deploy import export

    export._require("onnx", "onnxscript")
    return export._torch_export(module, example, opset=opset, optimize=optimize, dynamic_shapes=dynamic_shapes,
                                input_name=input_name)


def add_metadata(proto, model, wrapper: WaveformModel) -> None:
    """The model-only export's metadata (name, classes, frontend) plus ``asczoo.waveform``."""
    from asczoo.deploy import export

    export._add_metadata(proto, model)
    for key, value in waveform_metadata(wrapper).items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    f = wrapper.frontend
    proto.doc_string = (f"asczoo {model.name}: {INPUT_NAME} (batch, {f.channels}, {f.samples}) float32 at "
                        f"{f.sample_rate} Hz (one {f.samples / f.sample_rate:g} s clip) -> {export.OUTPUT_NAME} "
                        f"(batch, {model.num_classes}); the log-mel frontend and normalisation are in the graph")


def example_waveforms(wrapper: WaveformModel, *, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = wrapper.frontend
    return (0.1 * torch.randn(batch, f.channels, f.samples, generator=g)).to(f.dft.device)


def verify_with_frontend(model, source: str | os.PathLike | bytes, *, batch: int, atol: float = 1e-4,
                         channels: int = 2, seed: int = 1, name: str | os.PathLike | None = None) -> float:
    """Largest |onnxruntime - PyTorch| logit difference on random waveforms, where PyTorch runs the
    model's own frontend (``frontend.batch``); raises ExportError beyond ``atol`` (times the largest
    logit magnitude when above 1, as :func:`asczoo.deploy.export.verify_onnx`)."""
    import onnxruntime

    from asczoo.deploy import export
    from asczoo.data.frontend import create_frontend

    frontend = create_frontend(**model.frontend_config)
    g = torch.Generator().manual_seed(seed + batch)
    samples = int(round(float(model.frontend_config["clip_seconds"]) * frontend.sample_rate))
    wave = 0.1 * torch.randn(batch, channels, samples, generator=g)
    with torch.no_grad():
        expected = model(frontend.batch(wave, frontend.sample_rate).to(next(model.parameters()).device)).float().cpu()
    label = name if name is not None else ("the exported graph" if isinstance(source, bytes) else source)
    session = onnxruntime.InferenceSession(source if isinstance(source, bytes) else str(source),
                                           providers=["CPUExecutionProvider"])
    try:
        (got,) = session.run([export.OUTPUT_NAME], {INPUT_NAME: wave.numpy()})
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
        raise export.ExportError(f"{label}: verification failed at batch {batch}: onnxruntime cannot run the "
                                 f"exported {model.name} ({str(exc).strip()[:300]}); nothing was written") from exc
    diff = float((torch.from_numpy(got) - expected).abs().max())
    allowed = atol * max(1.0, float(expected.abs().max()))
    if not diff <= allowed:
        raise export.ExportError(f"{label}: verification failed at batch {batch}: onnxruntime (waveform -> logits) and "
                                 f"PyTorch (frontend + model) differ by up to {diff:.3g} (allowed {allowed:.3g}); "
                                 "nothing was written")
    return diff
