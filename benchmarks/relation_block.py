"""One ATReSN block, forward and backward: asczoo's implementation against a dense reference.

The reference, :class:`DenseATReSN`, follows the authors' formulation (``senota_module`` and
``knn_l2`` in zlw9161/ATReSN-Net) step by step, in PyTorch: the full ``P x P`` matrix
``2 x.x' - |x|^2 - |x'|^2`` per sample with the N same-segment blocks masked, top-k; the centre
features tiled k times and the neighbour features gathered, both ``(B, P, k, C)``; the augmented
positions through gamma; the concatenation ``[pos, x_i, x_s]`` of width ``2C + 16`` and the full first
layer of the pair encoder on it; the second layer, attentive pooling, the output layer, the residual
sum. It is not weakened: the distance matrix is built with in-place operations (one ``(B, P, P)``
buffer at a time), the mask is a boolean constant cached per size, neighbour indices carry no
gradient, the gathers are ``index_select`` (whose backward is an index add), intermediates are
released as soon as the backward pass does not need them, and every layer is one matmul. It
computes the same function as the asczoo block: the script copies the block's weights into it and
checks outputs and gradients in float64 first.

Sizes are the paper's (Table 1, DCASE input): B = 16, N = 8 segments, stage 2 (C = 128, 16 x 10 per
segment: P = 1280) and stage 3 (C = 256, 8 x 5: P = 320), k = 4, 8, 16. Time is the median of
interleaved repeats; peak memory is the extra resident memory of one forward + backward in a fresh
process (:func:`benchmarks.common.peak_memory`).

Run: ``python -m benchmarks.relation_block [--quick]`` (``--quick``: only P = 1280, k = 8, at B = 4);
last line ``RESULT speedup=... memory_ratio=...`` for P = 1280, C = 128, k = 8 (reference / asczoo).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common

#: (label, C, F, T) per stage at the full DCASE input with timm's stem; N = 8 segments
STAGES = {"stage2": (128, 16, 10), "stage3": (256, 8, 5)}
HEADLINE = ("stage2", 8)  # P = 1280, C = 128, k = 8


def make_block(channels: int, k: int, **options) -> nn.Module:
    """asczoo's ATReSN block (plugin ``atresn``)."""
    from asczoo import plugins

    return plugins.get_part("relation_block", "atresn").factory(channels=channels, k=k, **options)


def _clone(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


class _Norm(nn.Module):
    """Batch norm of a channel-last tensor (the authors' 1x1-conv batch norm): statistics over all
    leading axes."""

    def __init__(self, source: nn.BatchNorm1d) -> None:
        super().__init__()
        self.weight, self.bias = _clone(source.weight), _clone(source.bias)
        self.register_buffer("running_mean", source.running_mean.detach().clone())
        self.register_buffer("running_var", source.running_var.detach().clone())
        self.eps, self.momentum = source.eps, source.momentum

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat = F.batch_norm(h.reshape(-1, h.shape[-1]), self.running_mean, self.running_var, self.weight,
                            self.bias, self.training, self.momentum, self.eps)
        return flat.view(h.shape)


class _Layer(nn.Module):
    """1x1 conv (a linear map on the channel axis) + batch norm (+ ReLU)."""

    def __init__(self, weight: torch.Tensor, norm: nn.BatchNorm1d, relu: bool = True) -> None:
        super().__init__()
        self.weight = _clone(weight)
        self.norm = _Norm(norm)
        self.relu = relu

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(F.linear(h, self.weight))
        return torch.relu(h) if self.relu else h


class DenseATReSN(nn.Module):
    """The authors' dense formulation of an ATReSN block, with the weights of an asczoo block.

    Supports what the ``atresn`` preset computes: squared L2 grouping over other segments, augmented
    positions through gamma (Euclidean or summed distance), two pair-encoder layers, attentive pooling
    with projection, output layer, ``X + R(X)``. No shrink.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if block.grouper.shrink or block.grouper.distance != "l2" or not block.grouper.exclude_same_segment:
            raise ValueError("DenseATReSN reproduces the default grouper only (l2, other segments, no shrink)")
        self.k = block.grouper.k
        self.summed = block.position_encoding.distance == "summed"
        self.gamma = _Layer(block.position_encoding.gamma.linear.weight, block.position_encoding.gamma.norm)
        pair = block.pair
        # the first layer on the concatenation [pos, x_i, x_s] (the authors' order), one weight
        first = torch.cat([pair.position.weight, pair.centre.weight, pair.neighbour.weight], dim=1)
        self.layers = nn.ModuleList([_Layer(first, pair.norm)])
        self.layers.extend(_Layer(layer.linear.weight, layer.norm) for layer in pair.layers)
        self.score = _clone(block.aggregator.score.weight)
        self.project = _Layer(block.aggregator.project.linear.weight, block.aggregator.project.norm)
        self.output = _Layer(block.output.linear.weight, block.output.norm, relu=False)
        self._masks: dict[tuple, torch.Tensor] = {}

    def _same_segment(self, points: int, segment: int, device: torch.device) -> torch.Tensor:
        key = (points, segment, device)
        if key not in self._masks:
            seg = torch.arange(points, device=device) // segment
            self._masks[key] = seg[:, None] == seg[None, :]  # (P, P) bool: the N diagonal blocks
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, f, t = x.shape
        p, k = n * f * t, self.k
        net = x.permute(0, 1, 3, 4, 2).reshape(b, p, c)  # (B, P, C), segment-major
        with torch.no_grad():  # knn_l2: -distance = 2 x.x' - |x|^2 - |x'|^2, same-segment blocks masked
            d = net.detach()
            square = d.square().sum(-1, keepdim=True)
            minus = torch.bmm(d, d.transpose(1, 2)).mul_(2).sub_(square).sub_(square.transpose(1, 2))
            minus.masked_fill_(self._same_segment(p, f * t, x.device), -math.inf)
            idx = minus.topk(k, dim=-1).indices  # (B, P, k)
            del minus
        flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * p).view(-1)
        net_expand = net.unsqueeze(2).expand(b, p, k, c)  # tile the centre features
        net_grouped = net.reshape(b * p, c).index_select(0, flat).view(b, p, k, c)  # group_point
        axes = [torch.arange(s, device=x.device, dtype=x.dtype) / s for s in (n, f, t)]
        coord = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(p, 3)
        coord_expand = coord.view(1, p, 1, 3).expand(b, p, k, 3)
        coord_grouped = coord[idx]
        coord_diff = coord_grouped - coord_expand
        if self.summed:
            dist = coord_diff.sum(-1, keepdim=True)
        else:
            dist = coord_diff.square().sum(-1, keepdim=True).sqrt()
        pos_enc = self.gamma(torch.cat([dist, coord_diff, coord_expand, coord_grouped], dim=-1))
        h = torch.cat([pos_enc, net_expand, net_grouped], dim=-1)  # (B, P, k, 2C + 16)
        del net_expand, net_grouped, pos_enc, coord_diff, coord_grouped  # free what backward does not need
        for layer in self.layers:
            h = layer(h)
        scores = torch.softmax(F.linear(h, self.score), dim=2)  # attentive pooling over the k neighbours
        a = self.project((h * scores).sum(dim=2))
        out = self.output(a)  # (B, P, C)
        return x + out.view(b, n, f, t, c).permute(0, 1, 4, 2, 3)


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (the output scale starts at 0, which would hide errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def check_equivalence(channels: int, freq: int, time: int, k: int, *, batch: int = 2, segments: int = 8) -> float:
    """Max abs difference between block and reference, float64, train mode: output, input gradient
    and every parameter gradient."""
    torch.manual_seed(0)
    block = make_block(channels, k).double()
    randomise(block)
    dense = DenseATReSN(block)
    x = torch.randn(batch, segments, channels, freq, time, dtype=torch.float64)
    grad = torch.randn_like(x)
    results = []
    for module in (block, dense):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        out.backward(grad)
        grads = {name: p.grad for name, p in module.named_parameters()}
        results.append((out.detach(), xi.grad, grads))
    (o1, g1, p1), (o2, g2, p2) = results
    diff = max(float((o1 - o2).abs().max()), float((g1 - g2).abs().max()))
    # parameter gradients, matched by role (the reference's first layer is the concatenated weight)
    pairs = [
        (p1["position_encoding.gamma.linear.weight"], p2["gamma.weight"]),
        (torch.cat([p1["pair.position.weight"], p1["pair.centre.weight"], p1["pair.neighbour.weight"]], 1),
         p2["layers.0.weight"]),
        (p1["pair.layers.0.linear.weight"], p2["layers.1.weight"]),
        (p1["aggregator.score.weight"], p2["score"]),
        (p1["aggregator.project.linear.weight"], p2["project.weight"]),
        (p1["output.linear.weight"], p2["output.weight"]),
        (p1["output.norm.weight"], p2["output.norm.weight"]),
    ]
    for a, b in pairs:
        diff = max(diff, float((a - b).abs().max()))
    return diff


def build(impl: str, *, batch: int, segments: int, channels: int, freq: int, time: int, k: int):
    """The module (``asczoo`` or ``dense``, same weights), an input and an output gradient, float32."""
    torch.manual_seed(0)
    block = make_block(channels, k)
    module = block if impl == "asczoo" else DenseATReSN(block)
    x = torch.randn(batch, segments, channels, freq, time).requires_grad_(True)
    grad = torch.randn(x.shape)
    return module, x, grad


def train_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def step():
        module(x).backward(grad)
        x.grad = None
        module.zero_grad(set_to_none=True)
    return step


def forward_step(module: nn.Module, x: torch.Tensor):
    def step():
        module(x)
    return step


def memory_step(impl: str, batch: int, segments: int, channels: int, freq: int, time: int, k: int):
    """Entry point for :func:`benchmarks.common.peak_memory`: one forward + backward."""
    return train_step(*build(impl, batch=batch, segments=segments, channels=channels, freq=freq, time=time, k=k))


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__).parse_args(argv)
    env = common.setup(args.threads)
    batch, segments = (4 if args.quick else 16), 8
    if args.quick:
        configs, repeats = [HEADLINE], 2
    else:
        configs, repeats = [(stage, k) for stage in STAGES for k in (4, 8, 16)], 7

    import inspect

    import asczoo.ops
    from asczoo_plugins import relation

    chunked = "chunk_size" in inspect.signature(asczoo.ops.semantic_knn).parameters
    print(f"asczoo: {os.path.dirname(asczoo.ops.__file__)}, relation plugin: {os.path.dirname(relation.__file__)}; "
          f"kNN in row blocks: {'yes' if chunked else 'no'}")
    print("\nequivalence (float64, train mode, B = 2; output, input and parameter gradients):")
    for stage, k in configs:
        c, f, t = STAGES[stage]
        print(f"  {stage} C={c} P={segments * f * t} k={k}: max |asczoo - dense| = "
              f"{check_equivalence(c, f, t, k):.2e}")

    rows, figures = [], {}
    for stage, k in configs:
        c, f, t = STAGES[stage]
        p = segments * f * t
        sizes = dict(batch=batch, segments=segments, channels=c, freq=f, time=t, k=k)
        ours, ours_x, ours_g = build("asczoo", **sizes)
        dense, dense_x, dense_g = build("dense", **sizes)
        fwd = common.interleave({"asczoo": forward_step(ours, ours_x), "dense": forward_step(dense, dense_x)},
                                repeats=repeats)
        both = common.interleave({"asczoo": train_step(ours, ours_x, ours_g),
                                  "dense": train_step(dense, dense_x, dense_g)}, repeats=repeats)
        del ours, dense, ours_x, dense_x, ours_g, dense_g
        mem = {impl: common.peak_memory("benchmarks.relation_block:memory_step", {"impl": impl, **sizes},
                                        threads=args.threads) for impl in ("asczoo", "dense")}
        speed = common.ratio(both["dense"].median, both["asczoo"].median)
        memory = common.ratio(mem["dense"]["peak"], mem["asczoo"]["peak"])
        figures[(stage, k)] = (speed, memory)
        rows.append([
            c, p, k,
            common.fmt_ms(fwd["asczoo"].median), common.fmt_ms(fwd["dense"].median),
            common.fmt_ms(both["asczoo"].median), common.fmt_ms(both["dense"].median), common.fmt_ratio(speed),
            common.fmt_mib(mem["asczoo"]["peak"]), common.fmt_mib(mem["dense"]["peak"]), common.fmt_ratio(memory),
        ])
        print(f"  measured {stage} k={k}", flush=True)
    print(f"\nATReSN block, B = {batch}, N = {segments}, float32, train mode; time: median of {repeats} interleaved "
          "repeats; peak: extra resident memory of one forward + backward (fresh process)")
    print(common.table(
        ["C", "P", "k", "fwd asczoo ms", "fwd dense ms", "fwd+bwd asczoo ms", "fwd+bwd dense ms", "speedup",
         "peak asczoo MiB", "peak dense MiB", "memory ratio"], rows))
    speed, memory = figures[HEADLINE]
    print(f"target at P = 1280, C = 128, k = 8: speedup >= 2 ({'met' if speed >= 2 else 'MISSED'}), "
          f"memory ratio >= 3 ({'met' if memory >= 3 else 'MISSED'})")
    print(common.result_line(speedup=speed, memory_ratio=memory))
    return {"env": env, "speedup": speed, "memory_ratio": memory, "figures": figures}


if __name__ == "__main__":
    main()
