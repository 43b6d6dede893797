"""Inflator plugin ``inflate-3d``: a 2D backbone becomes a 3D one over the segment axis (SPEC section 4).

Every 2D convolution, batch norm and pooling becomes its 3D form with a 1 x k x k kernel, the 2D
weights copied in; no parameter is added. Two modes compute the same function:

* ``folded`` (default, fast): the segments are folded into the batch and the 2D network runs
  unchanged; a 1 x k x k 3D layer *is* N copies of the 2D layer with shared weights.
* ``conv3d``: real ``Conv3d`` / ``BatchNorm3d`` / ``MaxPool3d`` layers on ``(B, C, N, F, T)``.
  Needed for a temporal kernel ``t > 1`` (I3D-style real 3D convolutions): the 2D kernel is either
  repeated over ``t`` taps and divided by ``t`` (``temporal_init: mean``, the response to a constant
  sequence is unchanged) or put in the centre tap (``temporal_init: centre``, the network starts as
  the 2D one exactly).

Parameter names are the 2D backbone's in both modes (batch norms keep their names, Conv3d weights
gain a temporal axis), so a segment model's state dict initialises the inflated backbone.
"""

from __future__ import annotations

import copy
from typing import Literal, Mapping

import torch
from torch import nn

from asczoo import hookimpl
from asczoo.interfaces import Backbone, Inflator, SegmentLayout


class FoldedLayout(SegmentLayout):
    """``(B, N, C, F, T)`` <-> ``(B * N, C, F, T)``; remembers N between ``enter`` and ``exit``."""

    name = "folded"

    def __init__(self) -> None:
        self.segments = 1

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        self.segments = x.shape[1]
        return x.flatten(0, 1)

    def exit(self, y: torch.Tensor) -> torch.Tensor:
        # reshape, not Tensor.unflatten: under a torch-function mode (the engine's GlobalBatchNorm) that
        # Python method calls super().unflatten, which breaks a compiled graph at every call
        return y.reshape(-1, self.segments, *y.shape[1:])

    def from_segments(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1)


class ChannelsFirst3DLayout(SegmentLayout):
    """``(B, N, C, F, T)`` <-> ``(B, C, N, F, T)``, the layout of ``Conv3d``."""

    name = "conv3d"

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)

    def exit(self, y: torch.Tensor) -> torch.Tensor:
        return y.transpose(1, 2)

    def from_segments(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class BatchNormAct3d(nn.BatchNorm3d):
    """timm's ``BatchNormAct2d`` (batch norm, dropout, activation) for 5D inputs; same parameter names."""

    def __init__(self, num_features: int, *, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, drop: nn.Module, act: nn.Module) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


#: the largest temporal kernel accepted: it multiplies every conv weight's size, so a config.json's
#: 10**9 would try to allocate terabytes
MAX_TEMPORAL_KERNEL = 63


def _triple(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def inflate_conv_weight(weight: torch.Tensor, temporal_kernel: int, temporal_init: str) -> torch.Tensor:
    """A 2D kernel ``(O, I, kh, kw)`` as a 3D kernel ``(O, I, t, kh, kw)`` (I3D-style for t > 1)."""
    w = weight.unsqueeze(2)
    if temporal_kernel == 1:
        return w.clone()
    if temporal_init == "mean":
        return w.repeat(1, 1, temporal_kernel, 1, 1) / temporal_kernel
    out = torch.zeros(*w.shape[:2], temporal_kernel, *w.shape[3:], dtype=w.dtype)
    out[:, :, temporal_kernel // 2] = weight
    return out


class Inflate3D(Inflator):
    """Inflate a 2D backbone over the segment axis, folded (fast) or with real 3D layers."""

    def __init__(self, mode: str = "folded", temporal_kernel: int = 1, temporal_init: str = "mean") -> None:
        if mode not in ("folded", "conv3d"):
            raise ValueError(f"inflate-3d: mode {mode!r}; expected 'folded' or 'conv3d'")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0 or temporal_kernel > MAX_TEMPORAL_KERNEL:
            raise ValueError(f"inflate-3d: temporal_kernel must be an odd positive integer, at most "
                             f"{MAX_TEMPORAL_KERNEL} (it multiplies every conv weight), got {temporal_kernel}")
        if temporal_kernel > 1 and mode == "folded":
            raise ValueError(
                "inflate-3d: temporal_kernel > 1 mixes neighbouring segments, which the folded mode cannot "
                "express; use mode: conv3d"
            )
        if temporal_init not in ("mean", "centre"):
            raise ValueError(f"inflate-3d: temporal_init {temporal_init!r}; expected 'mean' or 'centre'")
        self.mode = mode
        self.temporal_kernel = temporal_kernel
        self.temporal_init = temporal_init

    def inflate(self, backbone: Backbone) -> tuple[Backbone, SegmentLayout]:
        if self.mode == "folded":
            return backbone, FoldedLayout()
        inflated = copy.deepcopy(backbone)
        self._convert(inflated, prefix="")
        return inflated, ChannelsFirst3DLayout()

    def _convert(self, module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            path = f"{prefix}{name}"
            new = self._convert_leaf(child, path)
            if new is not None:
                setattr(module, name, new)
            else:
                self._convert(child, prefix=path + ".")

    def _convert_leaf(self, m: nn.Module, path: str) -> nn.Module | None:
        t = self.temporal_kernel
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ValueError(f"inflate-3d: cannot inflate {path} ({type(m).__name__} with padding {m.padding!r})")
            if type(m) is not nn.Conv2d:
                raise ValueError(
                    f"inflate-3d: cannot inflate {path}: {type(m).__name__} overrides Conv2d.forward; "
                    "use mode: folded"
                )
            conv = nn.Conv3d(
                m.in_channels, m.out_channels, (t, *_triple(m.kernel_size)),
                stride=(1, *_triple(m.stride)), padding=(t // 2, *_triple(m.padding)),
                dilation=(1, *_triple(m.dilation)), groups=m.groups, bias=m.bias is not None,
            )
            with torch.no_grad():
                conv.weight.copy_(inflate_conv_weight(m.weight, t, self.temporal_init))
                if m.bias is not None:
                    conv.bias.copy_(m.bias)
            return conv
        if isinstance(m, nn.BatchNorm2d):
            if hasattr(m, "act") and hasattr(m, "drop"):
                bn = BatchNormAct3d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                    track_running_stats=m.track_running_stats, drop=m.drop, act=m.act)
            elif type(m) is nn.BatchNorm2d:
                bn = nn.BatchNorm3d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                    track_running_stats=m.track_running_stats)
            else:
                raise ValueError(f"inflate-3d: cannot inflate {path} of type {type(m).__name__}")
            bn.load_state_dict(m.state_dict())
            return bn
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise ValueError(f"inflate-3d: cannot inflate {path}: MaxPool2d with return_indices")
            return nn.MaxPool3d((1, *_triple(m.kernel_size)), (1, *_triple(m.stride)), (0, *_triple(m.padding)),
                                (1, *_triple(m.dilation)), ceil_mode=m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            return nn.AvgPool3d((1, *_triple(m.kernel_size)), (1, *_triple(m.stride)), (0, *_triple(m.padding)),
                                ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)
        if isinstance(m, (nn.Conv1d, nn.BatchNorm1d, nn.Linear)) or any(
            isinstance(m, cls) for cls in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.GroupNorm, nn.LayerNorm)
        ):
            raise ValueError(f"inflate-3d: cannot inflate {path} of type {type(m).__name__}; use mode: folded")
        return None

    def load_2d_state(self, inflated: Backbone, state: Mapping[str, torch.Tensor]) -> None:
        if self.mode == "folded":
            inflated.load_state_dict(dict(state), strict=True)
            return
        own = inflated.state_dict()
        converted = {}
        for key, value in state.items():
            target = own.get(key)
            if target is not None and value.dim() == 4 and target.dim() == 5:
                value = inflate_conv_weight(value, self.temporal_kernel, self.temporal_init)
            converted[key] = value
        inflated.load_state_dict(converted, strict=True)


def inflate_3d(
    *,
    mode: Literal["folded", "conv3d"] = "folded",
    temporal_kernel: int = 1,
    temporal_init: Literal["mean", "centre"] = "mean",
) -> Inflate3D:
    """Inflate 2D layers to 1 x k x k 3D ones (folded fast path or real Conv3d; I3D t > 1)."""
    return Inflate3D(mode=mode, temporal_kernel=temporal_kernel, temporal_init=temporal_init)


@hookimpl
def asczoo_register_inflators(register):
    register("inflate-3d", inflate_3d)
