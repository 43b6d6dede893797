"""The inflator's folded path against real Conv3d layers (docs/method.md section 4), forward and backward.

``resnet18-3d`` is built twice, with ``inflator.mode: folded`` (the 2D network on the B * N segments
folded into the batch) and ``mode: conv3d`` (real ``Conv3d``/``BatchNorm3d``/``MaxPool3d`` layers
with 1 x k x k kernels), the conv3d model loaded with the folded model's weights. The two compute the
same function; the script checks that (outputs and input gradients, max abs difference) before it
times, interleaved: inference (eval, no grad) and a training forward + backward, at the full DCASE
input ``(B, 8, 3, 128, 80)``.

Run: ``python -m benchmarks.inflator [--quick]`` (``--quick``: B = 1); last line
``RESULT speedup=... forward_speedup=...`` (``speedup``: conv3d time / folded time, forward + backward).
"""

from __future__ import annotations

import torch

import asczoo
from benchmarks import common

MODEL = "resnet18-3d"


def build_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The folded and the conv3d model, with the same weights."""
    torch.manual_seed(0)
    folded = asczoo.create_model(MODEL, overrides={"inflator": {"mode": "folded"}})
    conv3d = asczoo.create_model(MODEL, overrides={"inflator": {"mode": "conv3d"}})
    conv3d.inflator.load_2d_state(conv3d.backbone, folded.backbone.state_dict())
    conv3d.head.load_state_dict(folded.head.state_dict())
    return folded, conv3d


def check_same(folded: torch.nn.Module, conv3d: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Max abs difference of the eval outputs and of the training input gradients."""
    outs, grads = [], []
    for model in (folded, conv3d):
        model.eval()
        with torch.no_grad():
            outs.append(model(x))
        model.train()
        torch.manual_seed(1)  # the same dropout mask in the head
        xi = x.clone().requires_grad_(True)
        model(xi).square().sum().backward()
        grads.append(xi.grad)
        model.zero_grad(set_to_none=True)
    return float((outs[0] - outs[1]).abs().max()), float((grads[0] - grads[1]).abs().max())


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__).parse_args(argv)
    env = common.setup(args.threads)
    batch = 1 if args.quick else 16
    repeats = 3 if args.quick else 5
    folded, conv3d = build_pair()
    shape = (batch, *folded.input_shape)
    x = torch.randn(shape)
    out_diff, grad_diff = check_same(folded, conv3d, x[:1])
    print(f"{MODEL}, input {shape}; folded vs conv3d: max |output diff| {out_diff:.2e} (eval), "
          f"max |input grad diff| {grad_diff:.2e} (train)")

    def infer(model):
        def step():
            with torch.no_grad():
                model(x)
        return step

    def train(model):
        def step():
            model(x).sum().backward()
            model.zero_grad(set_to_none=True)
        return step

    for m in (folded, conv3d):
        m.eval()
    t_inf = common.interleave({"folded": infer(folded), "conv3d": infer(conv3d)}, repeats=repeats)
    for m in (folded, conv3d):
        m.train()
    t_train = common.interleave({"folded": train(folded), "conv3d": train(conv3d)}, repeats=repeats)
    rows = []
    for what, t in (("forward (eval, no grad)", t_inf), ("forward + backward (train)", t_train)):
        rows.append([what, common.fmt_ms(t["folded"].median), common.fmt_ms(t["conv3d"].median),
                     common.fmt_ratio(common.ratio(t["conv3d"].median, t["folded"].median))])
    print(f"\nB = {batch}, median of {repeats} interleaved repeats (ms)")
    print(common.table(["pass", "folded ms", "conv3d ms", "conv3d / folded"], rows))
    speedup = common.ratio(t_train["conv3d"].median, t_train["folded"].median)
    forward = common.ratio(t_inf["conv3d"].median, t_inf["folded"].median)
    print(common.result_line(speedup=speedup, forward_speedup=forward, batch=batch,
                             max_abs_diff=max(out_diff, grad_diff)))
    return {"env": env, "speedup": speedup, "forward_speedup": forward}


if __name__ == "__main__":
    main()
