"""The composable relation block and its presets ``atresn``, ``tresn`` and ``senot`` (SPEC 5, 6).

A block maps a feature map ``X (B, N, C, F, T)`` to ``X + R(X)``, the residual sum (the host adds
nothing). ``R`` is built from parts, each replaceable by name:

1. grouper: ``k`` nearest points from other segments (:mod:`.grouper`), optionally on a map shrunk
   by 2 in F and T;
2. position encoding of each (centre, neighbour) pair, a registered ``position_encoding`` part;
3. pair-wise encoder ``f([x_i, x_s, pos])``, widths C/4 and C/2 (:mod:`.pair_encoder`);
4. aggregator over the k neighbours, a registered ``aggregator`` part;
5. output: 1x1 conv to C and batch norm whose scale starts at 0, so a fresh block returns ``X``
   exactly and a fresh relation network computes what its plain backbone computes.

The presets differ only in their defaults (SPEC section 6):

======  ==================  ===========
preset  position encoding   aggregator
======  ==================  ===========
senot   relative (3, raw)   max
tresn   augmented-mlp (16)  max
atresn  augmented-mlp (16)  attentive
======  ==================  ===========

Every option is open to every preset, so ``atresn`` with ``position_encoding: relative`` is the
paper's Table 2 ablation. Parts are looked up with :func:`asczoo.plugins.get_part`, so aggregators
and position encodings from other plugins work here unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from torch import nn

from asczoo import plugins
from asczoo.arguments import check_arguments
from asczoo.ops import from_points, point_positions, to_points
from asczoo_plugins.relation.grouper import SemanticGrouper
from asczoo_plugins.relation.layers import LinearNorm
from asczoo_plugins.relation.pair_encoder import PairEncoder

Distance = Literal["l2", "cosine"]
PositionDistance = Literal["euclidean", "summed"]
#: what the grouper's distances are computed in (see :mod:`.grouper`): "float32" (default: the points
#: cast to float32, IEEE float32 whatever TF32) or "input" (the points' dtype, bf16 under bf16 autocast)
GrouperPrecision = Literal["float32", "input"]


class RelationBlock(nn.Module):
    """``X (B, N, C, F, T) -> X + R(X)`` from a grouper, position encoding, pair encoder and aggregator."""

    def __init__(
        self,
        *,
        channels: int,
        grouper: SemanticGrouper,
        position_encoding: nn.Module,
        aggregator: nn.Module,
        pair_widths: tuple[int, ...],
        names: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.grouper = grouper
        self.position_encoding = position_encoding
        self.pair = PairEncoder(channels, int(position_encoding.out_dim), pair_widths)
        self.aggregator = aggregator
        self.output = LinearNorm(self.pair.out_dim, channels, relu=False)
        nn.init.zeros_(self.output.norm.weight)  # a fresh block adds exactly zero
        self.names = dict(names or {})

    def relation(self, x: torch.Tensor) -> torch.Tensor:
        """``R(X)``: the relation embedding map ``(B, N, C, F, T)`` that the block adds to ``X``."""
        if x.dim() != 5 or x.shape[2] != self.channels:
            raise ValueError(
                f"relation block for {self.channels} channels expects (B, N, {self.channels}, F, T), "
                f"got shape {tuple(x.shape)}"
            )
        size = tuple(x.shape[-2:])
        g = self.grouper.downsample(x)
        n, f, t = g.shape[1], g.shape[3], g.shape[4]
        points = to_points(g)  # (B, P, C)
        index = self.grouper(points, f * t)  # (B, P, k)
        pos = point_positions((n, f, t), device=x.device, dtype=x.dtype)  # (P, 3)
        enc = self.position_encoding(pos.view(1, -1, 1, 3), pos[index])  # (B, P, k, D)
        out = self.output(self.pool(self.pair.hidden(points, index, enc)))  # (B, P, C)
        return self.grouper.upsample(from_points(out, (n, f, t)), size)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pair encoder's last layer, then the aggregator: ``(B, P, k, C/4) -> (B, P, C/2)``.

        An aggregator with a ``pool_after(layer, x)`` method (meaning ``aggregator(layer(x))``) gets
        the last layer to fuse with it (the built-in attentive pooling does, see
        :class:`~asczoo_plugins.relation.aggregators.LinearNormAttentiveSum`); any other aggregator
        receives the pair embeddings ``(B, P, k, C/2)``.
        """
        *layers, last = [*self.pair.layers] or [None]
        for layer in layers:
            hidden = layer(hidden)
        if last is None:
            return self.aggregator(hidden)
        pool_after = getattr(self.aggregator, "pool_after", None)
        return pool_after(last, hidden) if callable(pool_after) else self.aggregator(last(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relation(x)

    def describe(self) -> dict[str, Any]:
        """What ``asczoo info`` shows for this block."""
        return {
            "block": self.names.get("block", type(self).__name__),
            "k": self.grouper.k,
            "distance": self.grouper.distance,
            **{key: value for key, value in self.names.items() if key != "block"},
            "exclude_same_segment": self.grouper.exclude_same_segment,
            "shrink": self.grouper.shrink,
            "grouper_precision": self.grouper.precision,
            "pair_widths": [self.pair.norm.num_features, *(layer.linear.out_features for layer in self.pair.layers)],
            "params": sum(p.numel() for p in self.parameters()),
        }


def _build_part(kind: str, name: str, options: dict[str, Any], *, where: str, host_supplied: dict[str, Any]):
    part = plugins.get_part(kind, name)
    check_arguments(part.factory, options, where=f"{where}: {kind.replace('_', ' ')} {name!r}",
                    supplied_by_host=tuple(host_supplied))
    return part.factory(**host_supplied, **options)


def build_relation_block(
    *,
    preset: str,
    channels: int,
    k: int,
    distance: str,
    exclude_same_segment: bool,
    shrink: bool,
    position_encoding: str,
    position_distance: str | None,
    position_encoding_options: dict | None,
    aggregator: str,
    aggregator_options: dict | None,
    grouper_precision: str = "float32",
) -> RelationBlock:
    """Assemble a :class:`RelationBlock` from part names (what the preset factories call)."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 4:
        raise ValueError(f"{preset}: channels must be an integer >= 4, got {channels!r}")
    where = f"relation block {preset!r}"
    pos_options = dict(position_encoding_options or {})
    if position_distance is not None:
        factory = plugins.get_part("position_encoding", position_encoding).factory
        if "distance" not in inspect.signature(factory).parameters:
            raise ValueError(
                f"{where}: position_distance={position_distance!r} is set, but position encoding "
                f"{position_encoding!r} has no distance term (use 'augmented' or 'augmented-mlp')"
            )
        pos_options["distance"] = position_distance
    pos = _build_part("position_encoding", position_encoding, pos_options, where=where, host_supplied={})
    if not isinstance(getattr(pos, "out_dim", None), int):
        raise ValueError(f"{where}: position encoding {position_encoding!r} has no integer 'out_dim'")
    widths = (max(1, channels // 4), max(1, channels // 2))
    agg = _build_part("aggregator", aggregator, dict(aggregator_options or {}), where=where,
                      host_supplied={"channels": widths[-1]})
    grouper = SemanticGrouper(k=k, distance=distance, exclude_same_segment=exclude_same_segment, shrink=shrink,
                              precision=grouper_precision)
    names = {"block": preset, "position_encoding": position_encoding, "aggregator": aggregator}
    if position_distance is not None:
        names["position_distance"] = position_distance
    return RelationBlock(
        channels=channels, grouper=grouper, position_encoding=pos, aggregator=agg, pair_widths=widths, names=names
    )


def atresn(
    *,
    channels: int,
    k: int = 4,
    distance: Distance = "l2",
    exclude_same_segment: bool = True,
    shrink: bool = False,
    position_encoding: str = "augmented-mlp",
    position_distance: PositionDistance | None = None,
    position_encoding_options: dict | None = None,
    aggregator: str = "attentive",
    aggregator_options: dict | None = None,
    grouper_precision: GrouperPrecision = "float32",
) -> RelationBlock:
    """ATReSN: augmented positions through gamma (10 -> 16), pair encoder, attentive pooling (paper)."""
    return build_relation_block(preset="atresn", **_options(locals()))


def tresn(
    *,
    channels: int,
    k: int = 4,
    distance: Distance = "l2",
    exclude_same_segment: bool = True,
    shrink: bool = False,
    position_encoding: str = "augmented-mlp",
    position_distance: PositionDistance | None = None,
    position_encoding_options: dict | None = None,
    aggregator: str = "max",
    aggregator_options: dict | None = None,
    grouper_precision: GrouperPrecision = "float32",
) -> RelationBlock:
    """TReSN: ATReSN with max pooling over the neighbours (paper's ablation, Fig. 4)."""
    return build_relation_block(preset="tresn", **_options(locals()))


def senot(
    *,
    channels: int,
    k: int = 4,
    distance: Distance = "l2",
    exclude_same_segment: bool = True,
    shrink: bool = False,
    position_encoding: str = "relative",
    position_distance: PositionDistance | None = None,
    position_encoding_options: dict | None = None,
    aggregator: str = "max",
    aggregator_options: dict | None = None,
    grouper_precision: GrouperPrecision = "float32",
) -> RelationBlock:
    """SeNoT: raw relative positions p_s - p_i (3 values), pair encoder, max pooling (SeNoT-Net)."""
    return build_relation_block(preset="senot", **_options(locals()))


def _options(local_vars: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in local_vars.items() if not key.startswith("_")}
