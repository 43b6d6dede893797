"""Which points a relation block takes as neighbours, for one clip (``asczoo explain``).

For every relation block of a model, one forward pass of the clip records, with forward hooks (the
model is not changed):

* the block's input map, hence its point grid ``(segments, F', T')`` (after the grouper's
  ``downsample``, so a shrunk block's grid);
* the ``k`` neighbours its grouper returns for every point (the grouper's own output);
* the per-neighbour weights of its aggregator: attentive pooling's softmax weights averaged over
  channels, or for max pooling the share of channels whose maximum comes from that neighbour;
* the size of the relation output ``R(X)`` at every point (L2 norm over channels).

The points explained are the ones the caller picks (flat indices into each block's grid, segment-major
then F then T, as :mod:`asczoo.interfaces` orders points) or else the ``top`` points with the largest
relation output. :func:`draw` renders the clip's log-mel segments with lines from each explained
point to its neighbours (width and opacity following the weights), one row per block.

A block can be explained when it exposes a ``grouper`` module returning the neighbour index
``(B, P, k)`` from ``(points, segment_size)`` and ``downsample`` (the built-in blocks do).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch


class ExplainError(ValueError):
    """The model, the clip or the chosen points cannot be explained (the message says why)."""


def _grid_label(grid: Sequence[int]) -> str:
    return f"{grid[0]} segments x {grid[1]} x {grid[2]}"


@torch.no_grad()
def explain(model, features: torch.Tensor, *, points: Sequence[int] | None = None, top: int = 3) -> dict[str, Any]:
    """Neighbourhoods of one clip's features ``(N, C, F, T)`` in every relation block of ``model``.

    Returns ``{"blocks": {placement: {...}}, "prediction": {...}}``, JSON-ready (see the module
    docstring); ``points`` are flat point indices, checked against each block's grid.
    """
    relations = getattr(model, "relations", None)
    if not relations:
        raise ExplainError(f"{getattr(model, 'name', 'the model')} has no relation blocks: nothing to explain")
    if features.dim() != 4:
        raise ExplainError(f"explain expects one clip's features (segments, channels, mels, frames), got {tuple(features.shape)}")
    if top < 1:
        raise ExplainError(f"top must be at least 1, got {top}")
    captured: dict[str, dict[str, torch.Tensor]] = {name: {} for name in relations}
    handles = []
    for name, block in relations.items():
        grouper = getattr(block, "grouper", None)
        if grouper is None or not hasattr(grouper, "downsample"):
            raise ExplainError(f"relation block {name!r} ({type(block).__name__}) has no grouper with downsample(): "
                               "explain cannot see its neighbours")
        store = captured[name]
        handles.append(block.register_forward_pre_hook(
            lambda _m, args, store=store, grouper=grouper: store.__setitem__("grid", grouper.downsample(args[0]).shape)))
        handles.append(block.register_forward_hook(
            lambda _m, args, out, store=store: store.__setitem__("relation", (out - args[0]).detach())))
        handles.append(grouper.register_forward_hook(
            lambda _m, _a, out, store=store: store.__setitem__("index", out.detach())))
        aggregator = getattr(block, "aggregator", None)
        if aggregator is not None:
            handles.append(aggregator.register_forward_pre_hook(
                lambda _m, args, store=store: store.__setitem__("pairs", args[0].detach())))
        output = getattr(block, "output", None)
        if isinstance(output, torch.nn.Module):
            handles.append(output.register_forward_hook(
                lambda _m, _a, out, store=store: store.__setitem__("relation_points", out.detach())))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(features.unsqueeze(0).to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    blocks: dict[str, Any] = {}
    for name, block in relations.items():
        store = captured[name]
        if "index" not in store:
            raise ExplainError(f"relation block {name!r} did not run in the forward pass")
        _, n, _, f, t = store["grid"]
        index = store["index"][0].cpu()  # (P, k)
        count = n * f * t
        if index.shape[0] != count:
            raise ExplainError(f"relation block {name!r}: its grouper returned {index.shape[0]} points for a "
                               f"{_grid_label((n, f, t))} grid")
        strength = _relation_strength(store, (n, f, t))
        weights, weight_kind = _neighbour_weights(block, store.get("pairs"))
        if points is None:
            chosen = torch.argsort(strength, descending=True)[:top].tolist()
        else:
            for p in points:
                if not 0 <= int(p) < count:
                    raise ExplainError(
                        f"point {p} is outside the clip for block {name!r}: it has {count} points "
                        f"({_grid_label((n, f, t))}), indices 0..{count - 1}")
            chosen = [int(p) for p in points]

        def where(p: int) -> dict[str, int]:
            return {"index": int(p), "segment": int(p) // (f * t), "f": (int(p) % (f * t)) // t, "t": int(p) % t}

        blocks[name] = {
            "grid": [int(n), int(f), int(t)],
            "k": int(index.shape[1]),
            "weights": weight_kind,
            "points": [{
                **where(p),
                "relation_norm": float(strength[p]),
                "neighbours": [{**where(q), "weight": None if weights is None else float(weights[p, j])}
                               for j, q in enumerate(index[p].tolist())],
            } for p in chosen],
        }
    probs = torch.sigmoid(logits[0]) if getattr(model, "activation", "softmax") == "sigmoid" else torch.softmax(logits[0], -1)
    best = int(probs.argmax())
    return {"model": getattr(model, "name", None), "prediction": {"label": model.classes[best], "probability": float(probs[best])},
            "blocks": blocks}


def _relation_strength(store: dict[str, torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
    """``|R(X)|`` per point of the grouper's grid ``(P,)``."""
    if "relation_points" in store and store["relation_points"].shape[1] == grid[0] * grid[1] * grid[2]:
        return store["relation_points"][0].float().norm(dim=-1).cpu()
    rel = store["relation"][0].float()  # (N, C, F, T) at the block's own size
    if tuple(rel.shape[-2:]) != grid[1:]:
        rel = torch.nn.functional.adaptive_avg_pool2d(rel, grid[1:])
    return rel.norm(dim=1).flatten().cpu()


def _neighbour_weights(block, pairs: torch.Tensor | None) -> tuple[torch.Tensor | None, str | None]:
    """Per (point, neighbour) weights ``(P, k)`` of the block's aggregator, and what they are."""
    aggregator = getattr(block, "aggregator", None)
    if pairs is None or aggregator is None:
        return None, None
    e = pairs[0].float()  # (P, k, C)
    score = getattr(aggregator, "score", None)
    if isinstance(score, torch.nn.Linear):
        return torch.softmax(score(e), dim=1).mean(dim=-1).cpu(), "attention (softmax over the k neighbours, mean over channels)"
    if type(aggregator).__name__ == "MaxPool":
        winners = torch.nn.functional.one_hot(e.argmax(dim=1), e.shape[1]).float()  # (P, C, k)
        return winners.mean(dim=1).cpu(), "max pooling (share of channels whose maximum comes from the neighbour)"
    return None, None


def draw(result: dict[str, Any], features: torch.Tensor, path: str | os.PathLike) -> None:
    """PNG of the clip's log-mel segments (first channel) with each block's neighbourhoods drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asczoo.atomic import atomic_write

    n, _, mels, frames = features.shape
    image = torch.cat(list(features[:, 0].float().cpu()), dim=1).numpy()  # (F, N * T)
    blocks = result["blocks"]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(max(6.0, n * 1.6), 2.4 * len(blocks)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (name, block) in zip(axes[:, 0], blocks.items()):
        _, gf, gt = block["grid"]
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        for s in range(1, n):
            ax.axvline(s * frames - 0.5, color="white", lw=0.8)

        def xy(pt: dict[str, int]) -> tuple[float, float]:
            return (pt["segment"] * frames + (pt["t"] + 0.5) * frames / gt - 0.5, (pt["f"] + 0.5) * mels / gf - 0.5)

        for i, point in enumerate(block["points"]):
            colour = colours(i % 10)
            x0, y0 = xy(point)
            for nb in point["neighbours"]:
                w = 1.0 / block["k"] if nb["weight"] is None else nb["weight"]
                x1, y1 = xy(nb)
                ax.plot([x0, x1], [y0, y1], color=colour, lw=0.5 + 4 * w, alpha=0.35 + 0.65 * min(1.0, w * block["k"] / 2))
                ax.plot(x1, y1, "o", color=colour, ms=4)
            ax.plot(x0, y0, "*", color=colour, ms=12, mec="white")
        ax.set_title(f"{name}: k = {block['k']}, grid {_grid_label(block['grid'])}; "
                     f"{block['weights'] or 'no neighbour weights'}", fontsize=8)
        ax.set_xlabel("frame (segments side by side)")
        ax.set_ylabel("mel band")
    fig.suptitle(f"{result.get('model')}: {result['prediction']['label']} ({result['prediction']['probability']:.2f})", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        # zlib level 1: a log-mel picture hardly compresses, and level 6 (the default) took half a
        # second of the demo page's answer for 8 segments; the file is about 13 % larger
        fig.savefig(f, format="png", dpi=120, pil_kwargs={"compress_level": 1})
    plt.close(fig)
