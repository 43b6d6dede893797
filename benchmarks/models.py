"""Training-step time and single-clip inference latency of the three reference models, full DCASE input.

Models: ``resnet18-segments`` (the 2D network on each segment, mean of the segment logits),
``resnet18-3d`` (inflated, no relation blocks) and ``atresn-net-resnet18`` (four ATReSN blocks, k = 4).
A training step is the paper's stage 2: batch 16 of ``(8, 3, 128, 80)`` clips, forward, cross-entropy,
backward, SGD with momentum 0.9 (lr 0.002, weight decay 1e-4). Inference is one clip, eval mode, no
gradient. The models are timed interleaved, median of the repeats.

The timm backbones of the ``timm-cnn`` plugin (EfficientNet-B0, MobileNetV3-Large, RegNetY-008,
ConvNeXt-Atto) are timed plain (``*-3d``) and with four ATReSN blocks (``atresn-net-*``); the table
gives each relation model's step time as a ratio to its own plain version.

Run: ``python -m benchmarks.models [--quick] [--only PATTERN] [--tiny]`` (``--quick``: batch 1, 2
repeats; ``--only``: the models matching a shell pattern, e.g. ``'*convnext*'``; ``--tiny``: the test
widths, a smoke run of the code path, its figures meaningless); last line ``RESULT
atresn_overhead=...`` (ATReSN-Net step time / ``resnet18-3d`` step time; target at most 1.5) and ``latency_ratio=...``
(the same for one clip's inference; target at most 1.3) when both are timed.
"""

from __future__ import annotations

import torch

import asczoo
from benchmarks import common

MODELS = ("resnet18-segments", "resnet18-3d", "atresn-net-resnet18")
#: (plain, with ATReSN blocks) on timm backbones through the timm-cnn plugin
TIMM_PAIRS = tuple((f"{slug}-3d", f"atresn-net-{slug}") for slug in (
    "efficientnet-b0", "mobilenetv3-large-100", "regnety-008", "convnext-atto"))
#: the model each one's step time is divided by
BASELINE = {"resnet18-segments": "resnet18-3d", "resnet18-3d": "resnet18-3d", "atresn-net-resnet18": "resnet18-3d",
            **{name: plain for pair in TIMM_PAIRS for name, plain in ((pair[0], pair[0]), (pair[1], pair[0]))}}


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """One stage-2 SGD step on ``(x, y)``."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-4)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return step


def inference(model: torch.nn.Module, x: torch.Tensor):
    def step():
        with torch.no_grad():
            model(x)
    return step


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, help="training batch (default 16; 1 with --quick)")
    p.add_argument("--only", default="*", help="time only the models matching this shell pattern (and their plain versions)")
    p.add_argument("--tiny", action="store_true", help="test widths and input (smoke run of the code; figures meaningless)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    batch = args.batch or (1 if args.quick else 16)
    repeats = 2 if args.quick else 5
    torch.manual_seed(0)
    import fnmatch

    from asczoo.testing import TINY_OVERRIDES

    wanted = [n for n in BASELINE if fnmatch.fnmatchcase(n, args.only)]
    names = [n for n in BASELINE if n in wanted or n in {BASELINE[w] for w in wanted}]
    overrides = TINY_OVERRIDES if args.tiny else None
    models = {name: asczoo.create_model(name, overrides=overrides) for name in names}
    shape = models[names[0]].input_shape
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    one = x[:1].clone()

    for m in models.values():
        m.train()
    train = common.interleave({n: training_step(m, x, y) for n, m in models.items()}, repeats=repeats)
    for m in models.values():
        m.eval()
    infer = common.interleave({n: inference(m, one) for n, m in models.items()}, repeats=3 * repeats)

    rows = []
    for name, m in models.items():
        params = sum(q.numel() for q in m.parameters())
        base = train[BASELINE[name]].median
        rows.append([name, f"{params / 1e6:.2f}", common.fmt_ms(train[name].median),
                     f"{batch / train[name].median:.1f}", f"{common.fmt_ratio(train[name].median / base)} "
                     f"({BASELINE[name]})", common.fmt_ms(infer[name].median)])
    print(f"\ninput (B, {', '.join(map(str, shape))}), training batch {batch}; median of {repeats} interleaved "
          f"training steps and {3 * repeats} single-clip inferences")
    print(common.table(["model", "params M", "train step ms", "clips / s", "step vs plain version",
                        "1-clip latency ms"], rows))
    if not {"resnet18-3d", "atresn-net-resnet18"} <= set(models):
        return {"env": env, "train": train, "infer": infer}
    base = train["resnet18-3d"].median
    overhead = train["atresn-net-resnet18"].median / base
    latency_ratio = infer["atresn-net-resnet18"].median / infer["resnet18-3d"].median
    print(f"target: ATReSN-Net step <= 1.5x resnet18-3d step: {overhead:.2f}x "
          f"({'met' if overhead <= 1.5 else 'MISSED'})")
    print(f"target: ATReSN-Net 1-clip latency <= 1.3x resnet18-3d: {latency_ratio:.2f}x "
          f"({'met' if latency_ratio <= 1.3 else 'MISSED'})")
    print(common.result_line(atresn_overhead=overhead, latency_ratio=latency_ratio, batch=batch,
                             atresn_step_ms=train["atresn-net-resnet18"].median * 1e3,
                             resnet3d_step_ms=base * 1e3,
                             atresn_latency_ms=infer["atresn-net-resnet18"].median * 1e3))
    return {"env": env, "atresn_overhead": overhead, "latency_ratio": latency_ratio}


if __name__ == "__main__":
    main()
