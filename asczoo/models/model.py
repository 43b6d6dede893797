"""The assembled model: backbone (inflated), relation blocks, head, normalisation, and its recipe.

An :class:`AscModel` is what :func:`asczoo.create_model` returns. It takes clip features
``(B, N, 3, F, T)`` and returns logits ``(B, num_classes)``. Relation blocks are attached to the
backbone's residual blocks with forward hooks rather than by rewriting the backbone, so the
backbone's parameter names are exactly those of the 2D segment model it was inflated from (the
paper's stage 1 -> stage 2 step is a plain state-dict load), and removing the blocks gives back the
plain 3D network.

Like a torchaudio pipeline bundle, the model carries what is needed to use it: its resolved recipe,
its frontend configuration, its class names and the training set's normalisation statistics (as
buffers, so they are saved with the weights).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from asczoo import inference
from asczoo.version import __version__
from asczoo.hub import files as hub_files
from asczoo.interfaces import AFTER_BLOCK, Backbone, Inflator, SegmentLayout

# Relation blocks live in hooks, and by default dynamo does not guard on hooks
# (``skip_nnmodule_hook_guards``): ``torch.compile`` of a model that differs from an already compiled
# one only by its hooks (its plain backbone, another block) would reuse that graph and silently compute
# the other model's function. Set when asczoo's models are first importable, before any is compiled
# (a graph compiled earlier has no hook guards to fail); it costs a few guard checks per call.
torch._dynamo.config.skip_nnmodule_hook_guards = False


class _AfterBlockHook:
    """Forward hook: the block's output goes through the relation block (in the (B, N, C, F, T) view)."""

    def __init__(self, layout: SegmentLayout, relation: nn.Module) -> None:
        self.layout = layout
        self.relation = relation

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return self.layout.from_segments(self.relation(self.layout.to_segments(output)))


class _BeforeActivationHook:
    """Forward pre-hook on a block's final activation: the relation output joins the residual sum
    before the ReLU (the authors' code)."""

    def __init__(self, layout: SegmentLayout, relation: nn.Module) -> None:
        self.layout = layout
        self.relation = relation

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.layout.from_segments(self.relation(self.layout.to_segments(args[0]))), *args[1:])


class AscModel(nn.Module):
    """An acoustic scene classifier assembled from parts; see the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        recipe: Mapping[str, Any],
        backbone: Backbone,
        layout: SegmentLayout,
        inflator: Inflator,
        head: nn.Module,
        relations: Mapping[str, tuple[nn.Module, str]] | None = None,
        frontend_config: Mapping[str, Any],
        input_shape: Sequence[int],
        classes: Sequence[str],
        tag: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.tag = tag
        self.recipe = copy.deepcopy(dict(recipe))
        self.frontend_config = copy.deepcopy(dict(frontend_config))
        self.input_shape = tuple(int(s) for s in input_shape)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.metrics: dict[str, Any] = {}
        self.inflator = inflator
        self.layout = layout
        self.backbone = backbone
        self.relations = nn.ModuleDict()
        self.relation_positions: dict[str, str] = {}
        self._hook_handles = []
        for placement, (block, position) in (relations or {}).items():
            self._attach_relation(placement, block, position)
        self.head = head
        channels, mels = self.input_shape[1], self.input_shape[2]
        self.register_buffer("norm_mean", torch.zeros(channels, mels))
        self.register_buffer("norm_std", torch.ones(channels, mels))

    def _attach_relation(self, placement: str, block: nn.Module, position: str) -> None:
        self.relations[placement] = block
        self.relation_positions[placement] = position
        act_path = self.backbone.final_activation_path(placement) if position != AFTER_BLOCK else None
        if act_path is not None:
            target = self.backbone.get_submodule(act_path)
            handle = target.register_forward_pre_hook(_BeforeActivationHook(self.layout, block))
        else:
            target = self.backbone.get_submodule(self.backbone.block_path(placement))
            handle = target.register_forward_hook(_AfterBlockHook(self.layout, block))
        self._hook_handles.append(handle)

    # -- forward -------------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{self.name}: expected clip features (batch, segments, channels, mels, frames) = "
                f"(B, {', '.join(map(str, self.input_shape))}), got {shape}"
            )
        if x.shape[2] != self.input_shape[1] or x.shape[3] != self.input_shape[2]:
            raise ValueError(
                f"{self.name}: expected {self.input_shape[1]} channels and {self.input_shape[2]} mel bands "
                f"(input shape (B, {', '.join(map(str, self.input_shape))})), got {tuple(x.shape)}"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stored training-set statistics (identity until :meth:`set_normalization`)."""
        return (x - self.norm_mean[:, :, None]) / self.norm_std[:, :, None]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip features ``(B, N, C, F, T)`` -> the last feature map ``(B, N, C', F', T')``."""
        self._check_input(x)
        x = self.normalize(x)
        return self.layout.exit(self.backbone(self.layout.enter(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- state carried with the weights ------------------------------------------------------------

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per (channel, mel band) training-set statistics, each of shape ``(C, F)``."""
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != self.norm_mean.shape or std.shape != self.norm_std.shape:
            raise ValueError(
                f"normalisation statistics must have shape {tuple(self.norm_mean.shape)} "
                f"(channels, mel bands); got mean {tuple(mean.shape)}, std {tuple(std.shape)}"
            )
        if not torch.isfinite(mean).all() or not torch.isfinite(std).all() or (std <= 0).any():
            raise ValueError("normalisation statistics must be finite with std > 0")
        with torch.no_grad():
            self.norm_mean.copy_(mean)
            self.norm_std.copy_(std)

    @property
    def config(self) -> dict[str, Any]:
        """Everything except the weights needed to rebuild this model (``config.json`` on the Hub)."""
        return {
            "asczoo_version": __version__,
            "name": self.name,
            "tag": self.tag,
            "recipe": copy.deepcopy(self.recipe),
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "frontend": copy.deepcopy(self.frontend_config),
            "task": self.task,
            "activation": self.activation,
            "metrics": copy.deepcopy(self.metrics),
        }

    @property
    def task(self) -> str:
        """``single-label`` (one class per clip) or ``multi-label`` (any number), from the recipe's ``task``."""
        return str(self.recipe.get("task") or "single-label")

    @property
    def activation(self) -> str:
        """What turns the logits into probabilities: ``softmax`` (single-label) or ``sigmoid`` (multi-label)."""
        return "sigmoid" if self.task == "multi-label" else "softmax"

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the backbone, the relation blocks, the head, and in total."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "backbone": count(self.backbone),
            "relations": count(self.relations),
            "head": count(self.head),
            "total": count(self),
        }

    # -- Hub and inference (implemented in asczoo.hub.files / asczoo.inference) --------------------

    def save_pretrained(self, save_directory, **kwargs):
        """Write ``model.safetensors``, ``config.json`` and a model card ``README.md``."""
        return hub_files.save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this model to the Hugging Face Hub in one commit."""
        return hub_files.push_to_hub(self, repo_id, **kwargs)

    def predict(self, path_or_waveform, sample_rate: int | None = None, **kwargs):
        """Classify a recording (path or waveform) with this model's own frontend."""
        return inference.predict(self, path_or_waveform, sample_rate=sample_rate, **kwargs)

    def timeline(self, path_or_waveform, sample_rate: int | None = None, **kwargs):
        """One row per window of a recording: start, end, labels, probabilities (:func:`asczoo.inference.timeline`)."""
        return inference.timeline(self, path_or_waveform, sample_rate=sample_rate, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}, classes={self.num_classes}"
