"""Backbone plugin ``timm-resnet``: timm's ResNet-18 and pre-activation ResNet-18 (SPEC section 3).

``arch`` selects ``resnet18`` (torchvision-style ResNet) or ``resnetv2_18`` (pre-activation, the
paper's "PreAct-18"). ``stem`` selects the input stem:

* ``timm``: the standard 7x7 stride-2 conv + 3x3 stride-2 max-pool; stage outputs for a 128 x 80
  segment are 32x20, 16x10, 8x5, 4x3, the feature sizes of the paper's Table 1.
* ``authors``: the authors' code, a 3x3 stride-1 conv + 3x3 stride-2 max-pool (stage strides
  1, 2, 2, 2 as in timm), so stages output 64x40, 32x20, 16x10, 8x5: four times the points.

``channels`` (stage widths) and ``stem_width`` work for both archs; ``drop_rate``,
``drop_path_rate`` and ``zero_init_last`` go to ``timm.create_model``. No other keyword does: a
recipe or ``config.json`` may come from anywhere, and timm accepts keys (``block``, ``act_layer``,
``global_pool``, ``num_classes``) that name classes, change the output or fail deep inside timm, so an
unknown key is refused naming it. Widths are bounded (:data:`MAX_WIDTH`, :data:`MAX_IN_CHANS`) before
anything is built. ImageNet weights (``timm_pretrained: true``) need the network and are off by
default.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Sequence

import timm
import torch
from torch import nn

from asczoo import hookimpl
from asczoo.interfaces import PLACEMENT_PATTERN, Backbone

ARCHS = ("resnet18", "resnetv2_18")
#: timm options that load files or download weights; recipes (which may come from the Hub) must not
#: set them: timm's checkpoint loading can unpickle. ImageNet weights go through ``timm_pretrained``.
_REFUSED_TIMM_KEYS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                      "pretrained_strict", "cache_dir")
_PLACEMENT = re.compile(PLACEMENT_PATTERN)
#: largest stage or stem width accepted (four times ResNet-18's widest stage, 512: about 0.8 GB of
#: float32 weights at 2048 in every stage) and input channel count
MAX_WIDTH, MAX_IN_CHANS = 2048, 64


def _parse_placement(placement: str) -> tuple[int, int]:
    match = _PLACEMENT.match(placement)
    if not match:
        raise ValueError(f"placement {placement!r} is not of the form 'res<stage>_<block>' (e.g. 'res2_1')")
    return int(match.group(1)), int(match.group(2))


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class TimmResNet(Backbone):
    """A timm ResNet(V2) returning its last feature map, with the paper's block names mapped."""

    def __init__(
        self,
        arch: str,
        *,
        in_chans: int = 3,
        stem: str = "timm",
        channels: Sequence[int] | None = None,
        stem_width: int | None = None,
        timm_pretrained: bool = False,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"timm-resnet: arch {arch!r} is not supported; expected one of {', '.join(ARCHS)}")
        if stem not in ("timm", "authors"):
            raise ValueError(f"timm-resnet: stem {stem!r}; expected 'timm' or 'authors'")
        refused = sorted(set(timm_kwargs) & set(_REFUSED_TIMM_KEYS))
        if refused:
            raise ValueError(
                f"timm-resnet: key(s) {', '.join(map(repr, refused))} would make timm load weights from a file "
                "or the network; recipes cannot set them (use timm_pretrained: true for ImageNet weights, "
                "init_from or from_pretrained for asczoo weights)"
            )
        if channels is not None and len(channels) != 4:
            raise ValueError(f"timm-resnet: channels must list 4 stage widths, got {list(channels)}")
        for key, values, limit in (("channels", channels or (), MAX_WIDTH), ("stem_width", [stem_width], MAX_WIDTH),
                                   ("in_chans", [in_chans], MAX_IN_CHANS)):
            for value in values:
                if value is not None and not 1 <= value <= limit:
                    raise ValueError(f"timm-resnet: {key} has {value!r}; expected integers from 1 to {limit}")
        self.arch = arch
        self.preact = arch == "resnetv2_18"
        kwargs = dict(timm_kwargs)
        if channels is not None:
            kwargs["channels"] = tuple(int(c) for c in channels)
        if self.preact and stem_width is not None:
            kwargs["stem_chs"] = int(stem_width)  # resnetv2's name for the stem width
        self.model = timm.create_model(
            arch, pretrained=timm_pretrained, num_classes=0, global_pool="", in_chans=in_chans, **kwargs
        )
        if not self.preact and stem_width is not None and stem_width != self.model.conv1.out_channels:
            self._resize_resnet_stem(int(stem_width))
        if stem == "authors":
            self._authors_stem()
        self.stem = stem
        self.num_features = int(self.model.num_features)

    # timm's plain ResNet stem ignores stem_width (always 64): rebuild the stem and layer1's entry.
    def _resize_resnet_stem(self, width: int) -> None:
        m = self.model
        old = m.conv1
        m.conv1 = _init_conv(nn.Conv2d(old.in_channels, width, old.kernel_size, old.stride, old.padding, bias=False))
        m.bn1 = nn.BatchNorm2d(width)
        block = m.layer1[0]
        out = block.conv1.out_channels
        stride = block.conv1.stride
        block.conv1 = _init_conv(nn.Conv2d(width, out, 3, stride=stride, padding=1, bias=False))
        expansion = getattr(block, "expansion", 1)
        final_out = out * expansion
        if width == final_out and stride == (1, 1):
            block.downsample = None
        else:
            block.downsample = nn.Sequential(
                _init_conv(nn.Conv2d(width, final_out, 1, stride=stride, bias=False)), nn.BatchNorm2d(final_out)
            )

    def _authors_stem(self) -> None:
        if self.preact:
            old = self.model.stem.conv
            self.model.stem.conv = _init_conv(nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False))
        else:
            old = self.model.conv1
            self.model.conv1 = _init_conv(nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    # -- placement mapping ---------------------------------------------------------------------------

    def _stages(self) -> list[nn.Module]:
        if self.preact:
            return [stage.blocks for stage in self.model.stages]
        return [self.model.layer1, self.model.layer2, self.model.layer3, self.model.layer4]

    def block_path(self, placement: str) -> str:
        stage, block = _parse_placement(placement)
        stages = self._stages()
        if stage > len(stages) or block > len(stages[stage - 1]):
            counts = ", ".join(f"stage {i + 1}: {len(s)} blocks" for i, s in enumerate(stages))
            raise ValueError(f"placement {placement!r} does not exist in {self.arch} ({counts})")
        if self.preact:
            return f"model.stages.{stage - 1}.blocks.{block - 1}"
        return f"model.layer{stage}.{block - 1}"

    def block_channels(self, placement: str) -> int:
        block = self.get_submodule(self.block_path(placement))
        return int(block.conv2.out_channels)

    def final_activation_path(self, placement: str) -> str | None:
        if self.preact:
            return None  # pre-activation blocks end with the residual sum; no final ReLU
        return self.block_path(placement) + ".act2"

    def stage_paths(self) -> list[tuple[str, str]]:
        if self.preact:
            stages = [("stem", "model.stem")]
            stages += [(f"res{i + 1}", f"model.stages.{i}") for i in range(len(self.model.stages))]
            return stages + [("final norm", "model.norm")]
        return [("stem", "model.maxpool")] + [(f"res{i}", f"model.layer{i}") for i in range(1, 5)]


def timm_resnet(
    *,
    arch: Literal["resnet18", "resnetv2_18"] = "resnet18",
    stem: Literal["timm", "authors"] = "timm",
    channels: list[int] | None = None,
    stem_width: int | None = None,
    in_chans: int = 3,
    timm_pretrained: bool = False,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    zero_init_last: bool | None = None,
) -> TimmResNet:
    """timm ResNet-18 / pre-activation ResNet-18 with a choice of stem (timm's or the authors').

    ``drop_rate`` (dropout before the classifier), ``drop_path_rate`` (stochastic depth) and
    ``zero_init_last`` are timm's options (timm's defaults when left out); the signature is the
    whole schema, so any other key is an error naming it.
    """
    for key, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"timm-resnet: {key} = {value!r}; expected a probability in [0, 1)")
    timm_kwargs = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate),
                                     ("zero_init_last", zero_init_last)) if v is not None}
    return TimmResNet(
        arch, in_chans=in_chans, stem=stem, channels=channels, stem_width=stem_width,
        timm_pretrained=timm_pretrained, **timm_kwargs,
    )


@hookimpl
def asczoo_register_backbones(register):
    register("timm-resnet", timm_resnet)
