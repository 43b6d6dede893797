"""The HEAR 2021 API for any asczoo model (https://hearbenchmark.com, "common API").

    import asczoo.hear as hear
    model = hear.load_model("path/to/saved-model")          # or "hf-hub:org/name"
    scene = hear.get_scene_embeddings(audio, model)          # (n_sounds, scene_embedding_size)
    emb, ts = hear.get_timestamp_embeddings(audio, model)    # (n_sounds, n_times, size), (n_sounds, n_times) ms

``audio`` is ``(n_sounds, n_samples)`` mono at ``model.sample_rate`` on the model's device. Sounds
are cut into consecutive windows of the model's clip length (the last one zero-padded by the
frontend), each turned into the model's input by its own frontend (mono is duplicated to both
sides) and run through the backbone with its relation blocks, ``batch_size`` windows at a time.

* Scene embedding: the backbone's last feature map averaged over segments, mel and time (what the
  classification head sees), then over the sound's windows: ``backbone.num_features`` values.
* Timestamp embeddings: the last feature map averaged over mel gives one vector per time column of
  each segment; those columns are placed at their times in the sound (segment start plus the column's
  centre; the paper's segments overlap) and linearly interpolated onto a regular grid every
  ``TIMESTAMP_HOP_MS`` (50 ms, HEAR's suggestion). Their real resolution is the backbone's final time
  stride (several hundred ms for the paper's models), not 50 ms.

Timestamps need the frontend's framing (``hop_length``, ``n_fft``, ``segments``, ``segment_frames``,
``clip_seconds``, ``sample_rate`` in its config, as ``dcase-logmel`` has); scene embeddings need only
``clip_seconds`` and ``sample_rate``. The submission validator (``hearvalidator``) checks this module:
``hear-validator asczoo.hear -m path/to/saved-model``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from asczoo.data.frontend import create_frontend, segment_starts

#: spacing of the timestamp embeddings (HEAR suggests at most 50 ms)
TIMESTAMP_HOP_MS = 50.0
#: windows per forward pass
BATCH_SIZE = 16
#: the sample rates a HEAR 2021 model may declare (the benchmark resamples every task to it)
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)


class HearModel(nn.Module):
    """An asczoo model with the HEAR attributes; ``.to(device)`` moves the model."""

    def __init__(self, model: nn.Module, *, batch_size: int = BATCH_SIZE) -> None:
        super().__init__()
        self.model = model.eval()
        self.frontend = create_frontend(**model.frontend_config)
        config = self.frontend.config
        _check_rate(self.frontend.sample_rate, f"asczoo.hear: model {getattr(model, 'name', '?')!r}: frontend")
        self.sample_rate = int(self.frontend.sample_rate)
        if not config.get("clip_seconds"):
            raise ValueError(f"asczoo.hear: frontend {config.get('plugin')!r} has no clip_seconds; "
                             "the HEAR wrapper cuts sounds into clip-length windows")
        self.clip_samples = int(round(float(config["clip_seconds"]) * self.sample_rate))
        self.scene_embedding_size = int(model.backbone.num_features)
        self.timestamp_embedding_size = int(model.backbone.num_features)
        self.batch_size = int(batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def extra_repr(self) -> str:
        return (f"model={getattr(self.model, 'name', '?')!r}, sample_rate={self.sample_rate}, "
                f"embedding={self.scene_embedding_size}")


def load_model(model_file_path: str | os.PathLike = "", *, device: str | torch.device | None = None,
               batch_size: int = BATCH_SIZE) -> HearModel:
    """A saved asczoo model (a folder written by ``save_pretrained``, or ``hf-hub:org/name``) as a
    HEAR model. ``device`` defaults to CUDA when available."""
    from asczoo.models.pretrained import from_pretrained

    if not model_file_path:
        raise ValueError("asczoo.hear.load_model: pass a saved model folder or 'hf-hub:org/name' "
                         "(hear-validator asczoo.hear -m PATH)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = from_pretrained(os.fspath(model_file_path), device=device)
    _check_rate(model.frontend_config.get("sample_rate"),
                f"asczoo.hear.load_model: {os.fspath(model_file_path)}: config.json frontend")
    return HearModel(model, batch_size=batch_size)


def _check_rate(rate: Any, where: str) -> None:
    """Refuse a sample rate HEAR 2021 does not allow (its tasks are resampled to one of four rates)."""
    if isinstance(rate, bool) or rate not in HEAR_SAMPLE_RATES:
        raise ValueError(f"{where} sample_rate {rate!r} is not one HEAR 2021 allows "
                         f"({', '.join(map(str, HEAR_SAMPLE_RATES))} Hz); train or fine-tune the model at one of them")


def _check_audio(audio: Any, model: HearModel) -> torch.Tensor:
    if not isinstance(model, HearModel):
        raise TypeError(f"asczoo.hear: expected the model from asczoo.hear.load_model, got {type(model).__name__}")
    audio = torch.as_tensor(audio)
    if audio.dim() != 2:
        raise ValueError(f"asczoo.hear: audio must be (n_sounds, n_samples) mono at {model.sample_rate} Hz, "
                         f"got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise ValueError("asczoo.hear: the sounds have no samples")
    return audio.to(model.device, torch.float32)


@torch.no_grad()
def _feature_maps(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, int]:
    """Last feature maps ``(n_sounds, W, N, C, F', T')`` of every clip window of every sound."""
    n_sounds, samples = audio.shape
    windows = max(1, math.ceil(samples / model.clip_samples))
    padded = nn.functional.pad(audio, (0, windows * model.clip_samples - samples))
    clips = padded.view(n_sounds * windows, 1, model.clip_samples)
    maps = []
    for start in range(0, clips.shape[0], model.batch_size):
        features = model.frontend.batch(clips[start:start + model.batch_size], model.sample_rate)
        maps.append(model.model.forward_features(features.to(model.device)).float())
    out = torch.cat(maps)
    return out.view(n_sounds, windows, *out.shape[1:]), windows


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``(n_sounds, n_samples)`` -> ``(n_sounds, scene_embedding_size)`` float32 on the model's device."""
    audio = _check_audio(audio, model)
    maps, _ = _feature_maps(audio, model)
    return maps.mean(dim=(1, 2, 4, 5)).contiguous()


def _column_times_ms(model: HearModel, columns: int) -> torch.Tensor:
    """Times (ms from the window start) of each segment's feature columns ``(N, columns)``."""
    config = model.frontend.config
    missing = [k for k in ("hop_length", "n_fft", "segments", "segment_frames") if k not in config]
    if missing:
        raise ValueError(f"asczoo.hear: timestamp embeddings need the frontend's framing; frontend "
                         f"{config.get('plugin')!r} has no {', '.join(missing)} in its config")
    hop, n_fft = int(config["hop_length"]), int(config["n_fft"])
    frames = 1 + (model.clip_samples + 2 * (n_fft // 2) - n_fft) // hop  # centred STFT frames
    starts = segment_starts(frames, int(config["segments"]), int(config["segment_frames"])).double()
    width = int(config["segment_frames"]) / columns
    frame = starts[:, None] + (torch.arange(columns, dtype=torch.float64) + 0.5) * width - 0.5
    return frame * hop / model.sample_rate * 1000.0


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_sounds, n_samples)`` -> embeddings ``(n_sounds, n_times, timestamp_embedding_size)`` and
    their centre times in milliseconds ``(n_sounds, n_times)``, every ``TIMESTAMP_HOP_MS``."""
    audio = _check_audio(audio, model)
    n_sounds, samples = audio.shape
    maps, windows = _feature_maps(audio, model)  # (S, W, N, C, F, T)
    columns = maps.mean(dim=4)  # (S, W, N, C, T)
    s, w, n, c, t = columns.shape
    local = _column_times_ms(model, t)  # (N, T)
    offsets = torch.arange(w, dtype=torch.float64) * (model.clip_samples / model.sample_rate * 1000.0)
    times = (offsets[:, None, None] + local[None]).reshape(-1)  # (W * N * T,)
    values = columns.permute(0, 1, 2, 4, 3).reshape(s, -1, c)  # (S, W * N * T, C)
    order = torch.argsort(times, stable=True)
    times, values = times[order], values[:, order.to(values.device)]
    duration_ms = samples / model.sample_rate * 1000.0
    count = max(1, int(duration_ms // TIMESTAMP_HOP_MS) + 1)
    grid = torch.arange(count, dtype=torch.float64) * TIMESTAMP_HOP_MS
    # linear interpolation between the surrounding columns, clamped at both ends
    right = torch.searchsorted(times, grid).clamp(1, len(times) - 1) if len(times) > 1 else torch.zeros_like(grid, dtype=torch.long)
    left = (right - 1).clamp_min(0)
    span = (times[right] - times[left]).clamp_min(1e-9)
    frac = ((grid - times[left]) / span).clamp(0.0, 1.0).to(values.dtype).to(values.device)
    left, right = left.to(values.device), right.to(values.device)
    embeddings = values[:, left] * (1 - frac)[None, :, None] + values[:, right] * frac[None, :, None]
    timestamps = grid.to(torch.float32).to(audio.device).expand(n_sounds, count).contiguous()
    return embeddings.contiguous().float(), timestamps
