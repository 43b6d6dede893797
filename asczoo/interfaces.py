"""The interfaces a plugin's parts implement: public API for plugin authors.

Shapes, everywhere in asczoo:
    clip features     (B, N, 3, F, T)   batch, segment, channel (L, R, L-R), mel band, frame
    feature maps      (B, N, C, F', T') what relation blocks and heads see
    relation points   (B, P, C)          P = N * F' * T' points, segment-major then F then T
"""

from __future__ import annotations

import abc
import dataclasses
import types
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

#: The paper's placement names: ``res{stage}_{block}``, stage 1..4, block 1-based.
PLACEMENT_PATTERN = r"^res([1-9])_([1-9][0-9]*)$"
#: Any placement a recipe may name: the paper's ``res2_1`` or a backbone's own name for a place
#: (``stage3``, ``blocks_4_1`` for module ``blocks.4.1``: no dots, since placements key a
#: ``ModuleDict``); the backbone's ``block_path`` decides whether it exists.
PLACEMENT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

AFTER_BLOCK = "after_block"
BEFORE_FINAL_ACTIVATION = "before_final_activation"


class Backbone(nn.Module, abc.ABC):
    """A 2D feature extractor: ``forward(x (B, C_in, F, T)) -> (B, C, F', T')``.

    Besides ``forward``, a backbone tells the host where its residual blocks are, so recipes can
    place relation blocks in the paper's notation (``res2_1``) without knowing module paths.
    """

    #: channels of the final feature map
    num_features: int

    @abc.abstractmethod
    def block_path(self, placement: str) -> str:
        """Module path (for ``get_submodule``) of the residual block named ``res{s}_{b}``."""

    @abc.abstractmethod
    def block_channels(self, placement: str) -> int:
        """Output channels of that residual block."""

    def final_activation_path(self, placement: str) -> str | None:
        """Module path of the block's last activation (the sum passes through it), or None if the
        block ends without one (pre-activation blocks); then "before the final activation" is the
        same point as "after the block"."""
        return None

    @abc.abstractmethod
    def stage_paths(self) -> Sequence[tuple[str, str]]:
        """``(label, module path)`` of the stem and every stage, in order, for ``asczoo info``."""


class SegmentLayout(abc.ABC):
    """How an inflated backbone lays out a segment sequence internally.

    The host uses it to move between the clip tensor ``(B, N, C, F, T)`` and the backbone's own
    layout, and to show relation blocks (which run inside the backbone) the ``(B, N, C, F, T)`` view.
    """

    name: str

    @abc.abstractmethod
    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Clip tensor ``(B, N, C, F, T)`` -> the backbone's input layout."""

    @abc.abstractmethod
    def exit(self, y: torch.Tensor) -> torch.Tensor:
        """Backbone output in its layout -> ``(B, N, C', F', T')``."""

    def to_segments(self, y: torch.Tensor) -> torch.Tensor:
        """An intermediate feature map in the backbone's layout -> ``(B, N, C, F, T)``."""
        return self.exit(y)

    @abc.abstractmethod
    def from_segments(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, F, T)`` -> the backbone's layout (inverse of :meth:`to_segments`)."""


class Inflator(abc.ABC):
    """Turns a 2D backbone into one that runs on segment sequences, weights carried over."""

    @abc.abstractmethod
    def inflate(self, backbone: Backbone) -> tuple[Backbone, SegmentLayout]:
        """Return the backbone to run (module paths unchanged) and its segment layout.

        Parameter names must stay those of the 2D backbone, so that a segment model's state dict
        initialises the inflated one (the paper's stage 1 -> stage 2 step).
        """

    def load_2d_state(self, inflated: Backbone, state: Mapping[str, torch.Tensor]) -> None:
        """Load a 2D backbone's state dict into an inflated backbone (strict)."""
        inflated.load_state_dict(dict(state), strict=True)


class Frontend(abc.ABC):
    """Audio to model input: ``frontend(waveform (channels, samples), sample_rate) -> (N, 3, F, T)``.

    The host calls exactly these members: ``config``, ``output_shape``, ``sample_rate``,
    ``clip_seconds``, ``__call__``, ``batch`` and, when the frontend defines it, ``windows``.
    """

    #: serialisable configuration, including ``plugin``: enough to rebuild the same frontend
    config: dict[str, Any]
    #: ``(N, 3, F, T)`` for a clip of the nominal length
    output_shape: tuple[int, int, int, int]
    #: sample rate the frontend works at (inputs at other rates are resampled)
    sample_rate: int

    #: Optional: ``windows(waveform (channels, samples), sample_rate, hop_seconds=None) -> (W, N, 3, F, T)``,
    #: the model inputs of a recording longer than a clip, one per window. Without it (None) the host
    #: cuts windows of :attr:`clip_seconds` every ``hop_seconds`` itself (and a last one ending at the end).
    #: Prediction (``asczoo predict``, ``model.predict``, ``model.timeline``) always cuts them itself, by
    #: that rule, from the recording resampled to :attr:`sample_rate` block by block, and hands them to
    #: :meth:`batch` at that rate: a recording of any length then fits in memory.
    windows = None

    @property
    def clip_seconds(self) -> float | None:
        """Nominal clip length in seconds (``config["clip_seconds"]``); None: any length is one clip.
        Data checks compare recordings with it; prediction cuts long recordings into such windows."""
        value = self.config.get("clip_seconds")
        return float(value) if value else None

    @abc.abstractmethod
    def __call__(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor: ...

    @abc.abstractmethod
    def batch(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``(B, channels, samples)`` on any device -> ``(B, N, 3, F, T)`` on the same device."""


class RelationBlock(nn.Module):
    """What a relation block factory returns: ``(B, N, C, F, T) -> (B, N, C, F, T)``, ``X + R(X)``.

    Subclassing is optional (any ``nn.Module`` of that shape works); the optional member is
    :meth:`describe`, which ``asczoo info`` shows.
    """

    def describe(self) -> dict[str, Any]:
        """Optional: the block's settings for people (``asczoo info``), e.g. ``{"k": 4, ...}``."""
        return {"type": type(self).__name__}


class Aggregator(nn.Module):
    """What an aggregator factory returns: pair embeddings ``(B, P, k, C)`` -> points ``(B, P, C)``.

    The optional member :meth:`pool_after` lets a relation block fuse the pair encoder's last layer
    with the pooling; the default is the unfused ``self(layer(x))``.
    """

    def pool_after(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Optional: ``self(layer(x))``, computed faster where the aggregator knows how."""
        return self(layer(x))


@dataclasses.dataclass(frozen=True)
class Clip:
    """One listed audio file of a dataset."""

    #: the path as listed (relative to the dataset root, e.g. ``audio/airport-barcelona-0-0-a.wav``)
    file: str
    #: absolute path on disk
    path: str
    #: class index, -1 when unlabelled
    label: int
    #: recording location (DCASE ``identifier``); clips of one location stay on one side of a split
    identifier: str


class Dataset(TorchDataset, abc.ABC):
    """What a dataset factory returns: ``dataset[i] -> (features float32 (N, 3, F, T), label int)``.

    Required: ``classes``, ``files``, ``__len__``, ``__getitem__``. The host also uses the members
    below, whose defaults here suit a dataset without a feature cache or listing checks.
    :class:`asczoo.data.ClipDataset` implements all of them; a dataset plugin usually subclasses it.
    """

    #: class names; label ``i`` is ``classes[i]``
    classes: list[str]
    #: every item's file, relative to the dataset root, as listed (in item order)
    files: list[str]

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    @property
    def labels(self) -> list[int]:
        """Every item's label, in item order, without computing features (-1: unlabelled)."""
        return [int(self[i][1]) for i in range(len(self))]

    #: the clips as listed, before any audio was read (``asczoo check-data`` checks them)
    entries: Sequence[Clip] = ()
    #: the problems of listed files left out (``skip_bad``); the host reports them
    skipped: Sequence[Any] = ()
    #: what determines the file lists: ``{"dataset", "root", "fold", "options"}`` (feature cache key)
    identity: Mapping[str, Any] = types.MappingProxyType({})
    #: True while a feature cache was asked for but none covers the files yet; the host then extracts
    #: (:func:`asczoo.data.extract`) and calls :meth:`attach_cache`
    needs_extraction: bool = False

    def attach_cache(self) -> bool:
        """Serve features from the complete feature cache that now covers the files."""
        raise NotImplementedError(f"{type(self).__name__} has no feature cache")

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)``, each ``(3, n_mels)``: the training split's statistics (from the cache)."""
        raise NotImplementedError(f"{type(self).__name__} has no feature cache to read statistics from")
