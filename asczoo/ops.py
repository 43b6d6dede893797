"""Point-set operations for relation blocks: public API for plugin authors.

A relation block sees a feature map ``(B, N, C, F, T)`` as ``P = N * F * T`` points per sample, laid
out segment-major, then F, then T (:func:`to_points`), so the points of segment ``n`` are the
consecutive run ``n * F * T ... (n + 1) * F * T - 1``. Each point has the position
``(n / N, f / F, t / T)`` (:func:`point_positions`, an index normalised by its axis length as in the
authors' code).

:func:`semantic_knn` finds each point's nearest points in feature space (the paper's semantic
neighbourhood grouper) and :func:`gather_neighbours` fetches their features as ``(B, P, k, C)``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch

Distance = Literal["l2", "cosine"]
DISTANCES: tuple[str, ...] = ("l2", "cosine")
Precision = Literal["float32", "input"]
#: what :func:`semantic_knn` computes its scores in: ``"float32"`` casts the points to float32 first
#: (IEEE float32, whatever the TF32 setting); ``"input"`` keeps the points' own dtype (bfloat16 or
#: float16 features under autocast: half the matmul cost, coarser scores, other neighbours)
PRECISIONS: tuple[str, ...] = ("float32", "input")


def to_points(x: torch.Tensor) -> torch.Tensor:
    """Feature map ``(B, N, C, F, T)`` -> points ``(B, N * F * T, C)``, segment-major then F then T."""
    if x.dim() != 5:
        raise ValueError(f"to_points expects a (B, N, C, F, T) feature map, got shape {tuple(x.shape)}")
    b, n, c, f, t = x.shape
    return x.permute(0, 1, 3, 4, 2).reshape(b, n * f * t, c)


def from_points(points: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Points ``(B, P, C)`` -> feature map ``(B, N, C, F, T)`` for ``grid = (N, F, T)``; inverse of
    :func:`to_points`."""
    n, f, t = grid
    b, p, c = points.shape
    if p != n * f * t:
        raise ValueError(f"from_points: {p} points do not fill a grid of N={n}, F={f}, T={t}")
    return points.reshape(b, n, f, t, c).permute(0, 1, 4, 2, 3)


def point_positions(
    grid: tuple[int, int, int], *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Positions ``(P, 3)`` of the points of a ``(N, F, T)`` grid: ``(n / N, f / F, t / T)``, in the
    order of :func:`to_points`."""
    axes = [torch.arange(size, device=device, dtype=dtype) / size for size in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def pairwise_distances(points: torch.Tensor, *, distance: Distance = "l2") -> torch.Tensor:
    """Distances ``(B, P, P)`` between all points of each sample, from one batched matmul.

    ``"l2"`` is the squared Euclidean distance ``|a|^2 + |b|^2 - 2 a.b`` (clamped at 0), ``"cosine"``
    is ``1 - cos(a, b)``. Computed in float32 (or float64 for float64 input), with autocast off: in
    half precision the subtraction in ``|a|^2 + |b|^2 - 2 a.b`` cancels most significant bits.
    No gradient flows through the result.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(map(repr, DISTANCES))}, got {distance!r}")
    if points.dim() != 3:
        raise ValueError(f"points must be (B, P, C), got shape {tuple(points.shape)}")
    dtype = torch.promote_types(points.dtype, torch.float32)
    with torch.no_grad(), torch.autocast(points.device.type, enabled=False), ieee_float32():
        pts = points.detach().to(dtype)
        if distance == "cosine":
            pts = torch.nn.functional.normalize(pts, dim=-1)
            return torch.bmm(pts, pts.transpose(1, 2)).neg_().add_(1.0)
        sq = pts.pow(2).sum(-1)
        dist = torch.bmm(pts, pts.transpose(1, 2)).mul_(-2.0)
        return dist.add_(sq.unsqueeze(2)).add_(sq.unsqueeze(1)).clamp_(min=0.0)


#: scores computed at a time per sample: a block is ``rows x P`` with ``rows = _KNN_ROW_ELEMENTS // P``,
#: so memory is O(B * rows * P), not O(B * P^2) (1 MiB of float32 per sample: 16 MiB at the recipes'
#: batch of 16). The block count depends on P alone, never on the batch size: the batch is a symbolic
#: size under ``torch.compile(dynamic=True)`` and a dynamic axis in an ONNX export, and a chunk count
#: computed from it is either a symbolic expression inductor cannot lower in a ``range`` or a
#: constant the exporter bakes into the graph (wrong for every other batch).
_KNN_ROW_ELEMENTS = 1 << 18


def knn_rows(points: int) -> int:
    """Rows of one score block of :func:`semantic_knn` for ``points`` points per sample (batch-free)."""
    return max(1, _KNN_ROW_ELEMENTS // max(1, points))


@contextlib.contextmanager
def ieee_float32():
    """Float32 matrix products in IEEE float32 inside the block, whatever the global setting.

    ``torch.backends.cuda.matmul.allow_tf32 = True`` or ``torch.set_float32_matmul_precision("high")``
    (which training on a GPU sets for speed) make float32 matmuls round their inputs to TF32's 10-bit
    mantissa; the kNN distances and folded batch-norm statistics are documented as float32, and at TF32
    0.3 to 0.9 % of points get another neighbour set. Restores the caller's setting on exit. While
    ``torch.compile`` traces it does nothing (the compiler cannot trace the setting; code that needs
    IEEE float32 in a compiled graph runs as an opaque operator, as :func:`semantic_knn` does).
    """
    if torch.compiler.is_compiling():
        yield
        return
    previous = torch.get_float32_matmul_precision()
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    if previous == "highest" and not cuda_tf32:
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32


def semantic_knn(
    points: torch.Tensor, k: int, *, segment_size: int | None = None, distance: Distance = "l2",
    chunk_size: int | None = None, precision: Precision = "float32",
) -> torch.Tensor:
    """Indices ``(B, P, k)`` of each point's ``k`` nearest points, nearest first.

    ``points`` is ``(B, P, C)``. With ``segment_size=S`` the P points form consecutive runs of S points
    (one run per segment) and a point never selects a point of its own run (the paper's grouper: the
    neighbours come from other segments); without it, a point never selects itself. ``distance`` is
    ``"l2"`` (squared Euclidean) or ``"cosine"`` (see :func:`pairwise_distances`). The indices carry
    no gradient. Raises ``ValueError`` if ``k`` exceeds the number of candidates.

    The scores are computed ``chunk_size`` rows at a time (default :func:`knn_rows`: about 256 K
    scores per sample, independent of the batch size so that compiled and exported graphs hold for
    every batch), each block from one ``bmm`` followed by its top-k, so memory grows as
    ``B * chunk * P`` rather than ``B * P^2``: a 64-segment clip fits where the full matrix would not. For ``"l2"`` the block
    holds ``2 x_i.x_j - |x_j|^2``, the negated squared distance plus the row's constant ``|x_i|^2``,
    which ranks the candidates of row ``i`` exactly as the distance does; it comes out of the one
    matmul by appending ``1`` to every row and ``-|x_j|^2`` to every key. For ``"cosine"`` it holds
    ``cos(x_i, x_j)``. Excluded candidates are set to ``-inf`` in place, one slice per segment (or
    the diagonal, when a point only excludes itself), so no mask is built.

    ``precision="float32"`` (the default) computes the scores from the points cast to float32, in
    IEEE float32 whatever the global TF32 setting (:func:`ieee_float32`): in half precision the
    ``|x_j|^2`` term cancels most significant bits. ``"input"`` keeps the points' dtype.
    Under ``torch.compile`` the whole search is one custom operator (``asczoo::semantic_knn``).
    """
    if points.dim() != 3:
        raise ValueError(f"points must be (B, P, C), got shape {tuple(points.shape)}")
    b, p, _ = points.shape
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(map(repr, DISTANCES))}, got {distance!r}")
    if segment_size is None:
        candidates = p - 1
        what = f"{p} points, each excluding itself"
        run = 1
    else:
        if isinstance(segment_size, bool) or not isinstance(segment_size, int) or segment_size < 1:
            raise ValueError(f"segment_size must be a positive integer, got {segment_size!r}")
        if p % segment_size:
            raise ValueError(f"{p} points do not split into runs of segment_size={segment_size}")
        candidates = p - segment_size
        what = f"{p // segment_size} segments of {segment_size} points, excluding a point's own segment"
        run = segment_size
    if k > candidates:
        raise ValueError(
            f"asked for k={k} neighbours but there are only {candidates} candidates ({what}); "
            f"lower k or use a larger feature map"
        )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    rows = chunk_size or knn_rows(p)
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        # one opaque operator for the compiler: it runs the eager blocks below at run time, so the
        # batch stays a plain symbolic size outside it, the block loop is not unrolled into the graph,
        # and the IEEE float32 context applies when it runs (the compiler cannot trace that setting)
        return torch.ops.asczoo.semantic_knn(points, k, run, distance == "cosine", rows, precision == "float32")
    return _knn_blocks(points, k, run, distance == "cosine", rows, precision == "float32")


def _knn_blocks(points: torch.Tensor, k: int, run: int, cosine: bool, rows: int, float32: bool) -> torch.Tensor:
    """The kernel of :func:`semantic_knn` (arguments already checked)."""
    b, p, _ = points.shape
    dtype = torch.promote_types(points.dtype, torch.float32) if float32 else points.dtype
    with torch.no_grad(), torch.autocast(points.device.type, enabled=False), ieee_float32():
        pts = points.detach().to(dtype)
        if cosine:
            queries = torch.nn.functional.normalize(pts, dim=-1)
            keys = queries
        else:  # [x_i, 1] . [2 x_j, -|x_j|^2] = 2 x_i.x_j - |x_j|^2
            queries = torch.cat([pts, pts.new_ones(b, p, 1)], dim=-1)
            keys = torch.cat([pts * 2.0, pts.pow(2).sum(-1, keepdim=True).neg_()], dim=-1)
        keys = keys.transpose(1, 2)
        chunks = []
        for r0 in range(0, p, rows):
            r1 = min(p, r0 + rows)
            score = torch.bmm(queries[:, r0:r1], keys)  # (B, rows, P), larger is nearer
            if run == 1:  # a point excludes itself: the diagonal of this block
                score.diagonal(offset=r0, dim1=1, dim2=2).fill_(-math.inf)
            else:  # a point excludes its segment: one (rows, run) slice per segment in the block
                for s0 in range(r0 - r0 % run, r1, run):
                    score[:, max(s0, r0) - r0:min(s0 + run, r1) - r0, s0:s0 + run].fill_(-math.inf)
            chunks.append(torch.topk(score, k, dim=-1, largest=True, sorted=True).indices)
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


@torch.library.custom_op("asczoo::semantic_knn", mutates_args=())
def _knn_operator(points: torch.Tensor, k: int, run: int, cosine: bool, rows: int, float32: bool) -> torch.Tensor:
    """:func:`_knn_blocks` as one operator, what :func:`semantic_knn` hands ``torch.compile``."""
    return _knn_blocks(points, k, run, cosine, rows, float32)


@_knn_operator.register_fake
def _(points: torch.Tensor, k: int, run: int, cosine: bool, rows: int, float32: bool) -> torch.Tensor:
    return points.new_empty((points.shape[0], points.shape[1], k), dtype=torch.int64)


def gather_neighbours(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Neighbour values ``(B, P, k, *rest)`` for ``index (B, P, k)`` into ``values (B, P', *rest)``.

    One ``index_select`` on the flattened points: nothing of size ``(B, P, P)`` and no repeated copy
    of ``values`` is built (only the result), and the backward pass scatter-adds into ``values``'
    gradient. Values shared by the whole batch, such as point positions ``(P', 3)``, are gathered
    with plain indexing: ``positions[index]``.
    """
    if index.dim() != 3:
        raise ValueError(f"index must be (B, P, k), got shape {tuple(index.shape)}")
    b, p, k = index.shape
    if values.dim() < 2 or values.shape[0] != b:
        raise ValueError(
            f"values must be (B, P', ...) with B={b} as in the index, got shape {tuple(values.shape)}"
        )
    count = values.shape[1]
    offsets = torch.arange(b, device=index.device, dtype=index.dtype).mul_(count).view(b, 1, 1)
    rows = values.reshape(b * count, *values.shape[2:])
    return rows.index_select(0, (index + offsets).reshape(-1)).view(b, p, k, *values.shape[2:])
