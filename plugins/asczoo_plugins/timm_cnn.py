"""Backbone plugin ``timm-cnn``: any timm CNN that supports ``features_only``, run on every segment.

timm's ``features_only`` wrapper exposes a network's feature stages (its ``feature_info``: module
name, channels, reduction). asczoo runs the wrapper on the folded ``(B x N, C, F, T)`` layout and
returns the last stage's map; relation blocks attach with forward hooks, so placements name modules:

* ``res{s}_{b}`` (the paper's notation): block ``b`` of the feature stage at reduction ``2**(s+1)``
  (``res2`` = stride 8, ``res3`` = stride 16, as in ResNet), e.g. ``res3_1``;
* ``stage{i}``: the output of feature stage ``i`` (1-based, in ``feature_info`` order);
* a timm module name, as timm spells it (``blocks.4.1``, ``stages.2``, ``s3.b2``); recipes write its
  dots as underscores (``blocks_4_1``), since placements key the model's ``relations`` ModuleDict.

``channels`` (the tiny test widths, and a way to build narrow variants) is translated per family:
ConvNeXt takes them as its stage ``dims``; EfficientNet and MobileNetV3 scale every width by
``channels[-1] / default last width`` (their ``channel_multiplier``); RegNet scales ``w0`` and ``wa``
by the same factor (and ``wa`` by w0's, so the quantised widths keep four stages). ``stem_width`` sets
RegNet's stem; elsewhere the stem follows the first widths. Segments smaller than the total stride
(the tiny test input) are padded up to it by repeating their last row and column (zeros would give
near-identical all-padding points, whose ties make the kNN ill-posed).

``pretrained: true`` loads timm's ImageNet weights through timm's own Hub download (Hugging Face
cache first; ``HF_HUB_OFFLINE=1`` works once they are cached). Networks that cannot be folded or
hooked are refused with the reason: no ``features_only`` support, or attention over a fixed number
of tokens (position embeddings sized for one image size).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Sequence

import timm
import torch
from torch import nn

from asczoo import hookimpl
from asczoo.interfaces import Backbone

#: timm options that load files; recipes may come from the Hub and must not set them
_REFUSED_TIMM_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "pretrained_strict",
                      "cache_dir", "features_only", "out_indices", "feature_cls")
_PAPER = re.compile(r"^res([1-9])_([1-9][0-9]*)$")
_STAGE = re.compile(r"^stage([1-9][0-9]*)$")
#: probe input for channel counts (large enough for stride 32 and for Inception's 75 x 75 minimum)
_PROBE = (128, 128)


class BackboneRefused(ValueError):
    """The timm network cannot run as an asczoo backbone (the message says why)."""


def _check_arch(arch: str) -> None:
    if not isinstance(arch, str) or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise ValueError(f"timm-cnn: timm has no model named {arch!r}{hint}")


def _family(arch: str) -> str:
    return timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]


_MULTIPLIER_ARCH = re.compile(r"^(efficientnet_b0|mobilenetv3_(large|small)_(\d+))$")


def _width_kwargs(arch: str, channels: Sequence[int] | None, stem_width: int | None,
                  default_channels: Sequence[int]) -> tuple[dict[str, Any], float | None]:
    """timm keywords that make ``arch`` about as wide as ``channels`` (see the module docstring), and
    the channel multiplier for the EfficientNet/MobileNetV3 generators (their entry points fix it)."""
    family = _family(arch)
    out: dict[str, Any] = {}
    multiplier = None
    if channels is not None:
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"timm-cnn: channels must be positive widths, got {channels}")
        factor = channels[-1] / default_channels[-1]
        if family == "convnext":
            if len(channels) != 4:
                raise ValueError(f"timm-cnn: {arch} has 4 stages; channels must list 4 widths, got {channels}")
            out["dims"] = tuple(channels)
        elif family in ("efficientnet", "mobilenetv3") and (m := _MULTIPLIER_ARCH.match(arch)):
            base = int(m.group(3)) / 100 if m.group(3) else 1.0
            multiplier = base * factor
        elif family == "regnet":
            cfg = timm.models.regnet.model_cfgs[arch]
            w0 = max(8, int(round(cfg.w0 * factor / 8)) * 8)
            # keep wa / w0 so the quantised widths keep their four stages
            out.update(w0=w0, wa=cfg.wa * w0 / cfg.w0, group_size=min(cfg.group_size, 8) if cfg.group_size else 0)
        else:
            raise ValueError(
                f"timm-cnn: no width translation for {arch} (timm family {family!r}); leave 'channels' unset "
                "or pass the family's own width keywords"
            )
    if stem_width is not None and family == "regnet":
        out["stem_width"] = int(stem_width)
    # elsewhere the stem follows the first widths (ConvNeXt: dims[0]; EfficientNet/MobileNetV3: the multiplier)
    return out, multiplier


def _refuse_fixed_tokens(arch: str) -> None:
    """Attention over a fixed token count (ViT-style position embeddings) cannot take spectrogram
    segments of any size, nor be folded: refuse with the reason."""
    with torch.device("meta"):
        probe = timm.create_model(arch, pretrained=False)
    if any(name.endswith("pos_embed") or name.endswith("absolute_pos_embed") for name, _ in probe.named_parameters()):
        size = getattr(getattr(probe, "patch_embed", None), "img_size", None)
        raise BackboneRefused(
            f"timm-cnn: {arch} is an attention network with position embeddings for a fixed token count "
            f"(image size {size}); it cannot run on spectrogram segments of another size. Use a CNN "
            "(e.g. efficientnet_b0, convnext_atto)"
        )


def _create(arch: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model``; a channel multiplier goes to the family's generator, since the
    EfficientNet/MobileNetV3 entry points pass their own (timm has no public keyword for it)."""
    multiplier = kwargs.pop("channel_multiplier", None)
    if multiplier is None:
        return timm.create_model(arch, **kwargs)
    module = timm.models.model_entrypoint(arch).__module__
    if module.endswith("efficientnet"):
        return timm.models.efficientnet._gen_efficientnet(arch, channel_multiplier=multiplier, **kwargs)
    return timm.models.mobilenetv3._gen_mobilenet_v3(arch, channel_multiplier=multiplier, **kwargs)


class TimmCNN(Backbone):
    """A timm ``features_only`` network returning its last feature stage; placements name its modules."""

    def __init__(self, arch: str, *, in_chans: int = 3, channels: Sequence[int] | None = None,
                 stem_width: int | None = None, pretrained: bool = False, **timm_kwargs: Any) -> None:
        super().__init__()
        _check_arch(arch)
        refused = sorted(set(timm_kwargs) & set(_REFUSED_TIMM_KEYS))
        if refused:
            raise ValueError(
                f"timm-cnn: key(s) {', '.join(map(repr, refused))} are set by asczoo or would make timm load "
                "files; recipes cannot set them (pretrained: true loads timm's ImageNet weights)"
            )
        _refuse_fixed_tokens(arch)
        kwargs = dict(timm_kwargs)
        if channels is not None or stem_width is not None:
            with torch.device("meta"):
                default = timm.create_model(arch, features_only=True).feature_info.channels()
            widths, multiplier = _width_kwargs(arch, channels, stem_width, default)
            kwargs.update(widths)
            if multiplier is not None:
                if pretrained:
                    raise ValueError(f"timm-cnn: pretrained: true needs {arch}'s default widths; leave 'channels' unset")
                kwargs["channel_multiplier"] = multiplier
        try:
            model = _create(arch, features_only=True, pretrained=False, in_chans=in_chans, **kwargs)
        except (RuntimeError, AttributeError, NotImplementedError, AssertionError) as exc:
            raise BackboneRefused(f"timm-cnn: {arch} does not support features_only in timm {timm.__version__}: {exc}") from exc
        if pretrained:
            model = _with_pretrained(arch, in_chans=in_chans, kwargs=kwargs, like=model)
        self.arch = arch
        self.model = model
        info = model.feature_info
        self.stage_names = list(info.module_name())
        self.stage_channels = [int(c) for c in info.channels()]
        self.stage_reductions = [int(r) for r in info.reduction()]
        self.num_features = self.stage_channels[-1]
        #: segments smaller than the total stride are edge-padded (bottom/right) up to it, so the
        #: deepest stage still has a 1 x 1 map (kernel-2 stride-2 downsamplers need 2 x 2)
        self.min_size = max(self.stage_reductions)
        self._channels = self._probe(in_chans)

    # -- construction helpers ------------------------------------------------------------------------

    def _probe(self, in_chans: int) -> dict[str, int]:
        """Channels of every module that outputs a feature map (one small eval-mode forward), and a
        check that each feature stage's module is the one whose output timm returns."""
        seen: dict[str, tuple[int, ...]] = {}
        handles = []
        for name, module in self.model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, name=name: seen.__setitem__(name, tuple(out.shape))
                    if isinstance(out, torch.Tensor) and out.dim() == 4 else None))
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                feats = self.model(torch.zeros(1, in_chans, *_PROBE))
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise BackboneRefused(
                f"timm-cnn: {self.arch} cannot run on a {_PROBE[0]} x {_PROBE[1]} map ({type(exc).__name__}: {exc}); "
                "networks that fix their input size (token mixing or attention over a fixed token count) "
                "cannot take spectrogram segments"
            ) from exc
        finally:
            self.model.train(was_training)
            for h in handles:
                h.remove()
        for i, (name, feat) in enumerate(zip(self.stage_names, feats)):
            path = self._module_path(name)
            if path is None or seen.get(path) != tuple(feat.shape):
                raise BackboneRefused(
                    f"timm-cnn: {self.arch}'s feature stage {i + 1} ({name!r}) cannot be hooked: the module does "
                    "not output the map timm returns for it, so relation blocks could not attach there"
                )
        return {path: shape[1] for path, shape in seen.items()}

    def _module_path(self, timm_name: str) -> str | None:
        """Path inside the features_only wrapper of a module named as timm's full model names it."""
        candidates = [timm_name, timm_name.replace(".", "_", 1), "model." + timm_name]
        for path in candidates:
            try:
                self.model.get_submodule(path)
            except AttributeError:
                continue
            return path
        flat = timm_name.replace(".", "_")  # a recipe's spelling: dots written as underscores
        matches = [name for name, _ in self.model.named_modules() if name and name.replace(".", "_") == flat]
        return matches[0] if len(matches) == 1 else None

    # -- placements ----------------------------------------------------------------------------------

    def _stage_blocks(self, stage_path: str) -> list[str]:
        stage = self.model.get_submodule(stage_path)
        blocks = getattr(stage, "blocks", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            return [f"{stage_path}.blocks.{i}" for i in range(len(blocks))]
        return [f"{stage_path}.{name}" for name, _ in stage.named_children()]

    def _describe(self) -> str:
        return ", ".join(f"stage{i + 1}={n} (stride {r}, {c} ch)" for i, (n, r, c) in
                         enumerate(zip(self.stage_names, self.stage_reductions, self.stage_channels)))

    def block_path(self, placement: str) -> str:
        path: str | None
        if (m := _PAPER.match(placement)) is not None:
            stage, block = int(m.group(1)), int(m.group(2))
            reduction = 2 ** (stage + 1)
            indices = [i for i, r in enumerate(self.stage_reductions) if r == reduction]
            if not indices:
                raise ValueError(f"placement {placement!r}: {self.arch} has no feature stage at stride {reduction} ({self._describe()})")
            blocks = self._stage_blocks(self._module_path(self.stage_names[indices[-1]]))
            if block > len(blocks):
                raise ValueError(f"placement {placement!r} does not exist in {self.arch}: its stride-{reduction} stage "
                                 f"{self.stage_names[indices[-1]]!r} has {len(blocks)} blocks")
            path = blocks[block - 1]
        elif (m := _STAGE.match(placement)) is not None:
            index = int(m.group(1))
            if index > len(self.stage_names):
                raise ValueError(f"placement {placement!r} does not exist in {self.arch}: {self._describe()}")
            path = self._module_path(self.stage_names[index - 1])
        else:
            path = self._module_path(placement)
            if path is None:
                raise ValueError(f"placement {placement!r} is not a module of {self.arch} (use res<s>_<b>, "
                                 f"stage<i> or a timm module name; stages: {self._describe()})")
        if path not in self._channels:
            raise ValueError(f"placement {placement!r} ({path}) of {self.arch} does not output a feature map")
        return "model." + path

    def block_channels(self, placement: str) -> int:
        return self._channels[self.block_path(placement)[len("model."):]]

    def stage_paths(self) -> list[tuple[str, str]]:
        return [(f"stage{i + 1} (stride {r})", "model." + self._module_path(n))
                for i, (n, r) in enumerate(zip(self.stage_names, self.stage_reductions))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_f, pad_t = max(0, self.min_size - x.shape[-2]), max(0, self.min_size - x.shape[-1])
        if pad_f or pad_t:
            x = nn.functional.pad(x, (0, pad_t, 0, pad_f), mode="replicate")
        return self.model(x)[-1]


def _with_pretrained(arch: str, *, in_chans: int, kwargs: dict[str, Any], like: nn.Module) -> nn.Module:
    """The same features_only network with timm's ImageNet weights, downloaded by timm (Hub cache)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return timm.create_model(arch, features_only=True, pretrained=True, in_chans=in_chans, **kwargs)
    except (LocalEntryNotFoundError, OSError) as exc:
        cfg = timm.models.get_pretrained_cfg(arch)
        repo = getattr(cfg, "hf_hub_id", None) or arch
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise RuntimeError(
            f"timm-cnn: timm's pretrained weights for {arch} are not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and could not be downloaded{offline}: {type(exc).__name__}: {exc}. "
            f"Download them once with network access (`huggingface-cli download {repo}`), point HF_HUB_CACHE "
            "at a cache that holds them, or set backbone pretrained: false"
        ) from exc
    except RuntimeError as exc:  # size mismatch: narrowed widths cannot take the ImageNet weights
        raise ValueError(f"timm-cnn: timm's pretrained weights for {arch} do not fit this network ({exc}); "
                         "pretrained: true needs the default widths (no 'channels'/'stem_width')") from exc


def timm_cnn(
    *,
    arch: str = "efficientnet_b0",
    in_chans: int = 3,
    channels: list[int] | None = None,
    stem_width: int | None = None,
    pretrained: bool = False,
    **timm_kwargs: Any,
) -> TimmCNN:
    """Any timm CNN with features_only (EfficientNet, MobileNetV3, RegNet, ConvNeXt, ...) on each segment."""
    return TimmCNN(arch, in_chans=in_chans, channels=channels, stem_width=stem_width,
                   pretrained=pretrained, **timm_kwargs)


@hookimpl
def asczoo_register_backbones(register):
    register("timm-cnn", timm_cnn)


@hookimpl
def asczoo_register_recipes(register):
    from pathlib import Path

    register(Path(__file__).with_name("timm_cnn.yaml"))
