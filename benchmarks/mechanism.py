"""Why relations matter (docs/method.md section 11), demonstrated: a task a 3D ResNet cannot learn and ATReSN can.

The task. A clip is N segments; two of them, chosen at random, hold an event: the same event twice
(class 1) or two different events (class 0). The other segments are silence (or, with
``--background random``, random patterns too). Every segment gets its own small noise, so a repeat is
never bit-identical. Events are random patterns drawn fresh for every clip, so nothing about a
particular event can be memorised: only the relation "this segment looks like that one" decides.

Why the plain network must fail. ``resnet18-3d`` runs the same 2D network on every segment (the
inflated kernels have extent 1 along the segment axis), averages the feature map over (N, F, T) and
applies a linear layer. Its logit is therefore ``sum_n h(segment_n)`` for some learned function
``h``. For a repeat clip that sum contains ``2 h(a)``, for a distinct clip ``h(a) + h(b)``; no
threshold puts ``2 h(a)`` above and ``h(a) + h(b)`` below it for all patterns ``a, b``. (With
``u = P(h(a) > c)``, the best a sum can do is ``(u + 1 - u^2) / 2 <= 62.5 %``, and only with a
two-valued ``h``; in practice such a net stays at chance.) ``atresn-net-resnet18`` compares points
across segments: a point's nearest neighbour from another segment is its twin in a repeat clip, at
relative position ``(dn, 0, 0)`` and at (nearly) zero feature distance, and the block can encode
that.

Why feature tensors instead of audio. The models consume ``(B, N, 3, F, T)``; the frontend is a
fixed, per-segment map from audio to that tensor, and the ``3`` channels are left, right and left
minus right. The argument above concerns only the model after the frontend: identical events in two
segments of a recording become (up to noise) identical log-mel patches, exactly what is generated
here, with the third channel built as left minus right. Generating the tensors directly removes the
frontend's cost and the alignment of events with the overlapping DCASE segments; it does not change
what the plain or the relation network can represent.

Run: ``python -m benchmarks.mechanism [--quick]``; the last line is
``RESULT relation_acc=... plain_acc=...``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

import asczoo
from asczoo.recipes.overrides import parse_overrides
from asczoo.recipes.model_recipes import deep_merge
from asczoo.testing import tiny_overrides

PLAIN = "resnet18-3d"
RELATION = "atresn-net-resnet18"


def make_clips(batch: int, shape: tuple[int, int, int, int], *, background: str = "silence", coverage: float = 1.0,
               offset: str = "same", noise: float = 0.1,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` clips ``(B, N, 3, F, T)`` and labels: 1 = the same event twice, 0 = two different events.

    The two events sit in two different random segments. The other segments are silence
    (``background="silence"``) or fresh random patterns of the same statistics as the events
    (``"random"``, a harder variant: every segment then offers distractor neighbours). An event is a
    random ``(2, F, T)`` left/right pattern; with ``coverage < 1`` it fills only a box of that fraction
    of the segment's area at a random place, the same in both segments (``offset="same"``) or at an
    independent time offset in each (``"random"``: the two copies then sit differently on the
    backbone's stride-8 grid, so even their features differ). Every segment gets its own noise of
    standard deviation ``noise``, so a repeat is never bit-identical.
    """
    if background not in ("silence", "random"):
        raise ValueError(f"background must be 'silence' or 'random', got {background!r}")
    if offset not in ("same", "random"):
        raise ValueError(f"offset must be 'same' or 'random', got {offset!r}")
    n, _, f, t = shape
    labels = torch.randint(0, 2, (batch,), generator=generator)
    events = torch.randn(batch, 2, 2, f, t, generator=generator)  # (clip, event a/b, L/R, F, T)
    if background == "random":
        lr = torch.randn(batch, n, 2, f, t, generator=generator)
    else:
        lr = torch.zeros(batch, n, 2, f, t)
    bf = max(1, round(f * math.sqrt(coverage)))
    bt = max(1, round(t * math.sqrt(coverage)))
    for i in range(batch):
        segments = torch.randperm(n, generator=generator)[:2].tolist()
        f0 = int(torch.randint(0, f - bf + 1, (1,), generator=generator))
        offsets = torch.randint(0, t - bt + 1, (2 if offset == "random" else 1,), generator=generator).tolist()
        if len(offsets) == 1:
            offsets = offsets * 2  # both copies at the same time offset
        sources = (0, 0) if labels[i] else (0, 1)
        for segment, t0, e in zip(segments, offsets, sources):
            lr[i, segment, :, f0:f0 + bf, t0:t0 + bt] = events[i, e, :, :bf, :bt]
    lr = lr + noise * torch.randn(lr.shape, generator=generator)
    clips = torch.cat([lr, lr[:, :, :1] - lr[:, :, 1:]], dim=2)  # channels: L, R, L - R
    return clips, labels


@torch.no_grad()
def accuracy(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, batch: int = 128) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(clips), batch):
        correct += int((model(clips[i:i + batch]).argmax(-1) == labels[i:i + batch]).sum())
    model.train()
    return correct / len(clips)


def train(name: str, *, overrides: dict, task: dict, steps: int, batch: int, lr: float, train_clips: int,
          eval_every: int, test: tuple[torch.Tensor, torch.Tensor], seed: int) -> dict:
    """Train ``name`` (2 classes) with Adam on fresh clips every step (or on a fixed set of
    ``train_clips``); held-out accuracy every ``eval_every`` steps."""
    torch.manual_seed(seed)
    model = asczoo.create_model(name, num_classes=2, overrides=overrides)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.Generator().manual_seed(seed + 1)  # the same training stream for every model
    fixed = make_clips(train_clips, model.input_shape, generator=data, **task) if train_clips else None
    curve, first_95, train_correct = [], None, []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if fixed is None:
            clips, labels = make_clips(batch, model.input_shape, generator=data, **task)
        else:
            pick = torch.randint(0, train_clips, (batch,), generator=data)
            clips, labels = fixed[0][pick], fixed[1][pick]
        logits = model(clips)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        train_correct.append(float((logits.argmax(-1) == labels).float().mean()))
        if step % eval_every == 0 or step == steps:
            acc = accuracy(model, *test)
            curve.append((step, acc))
            if first_95 is None and acc >= 0.95:
                first_95 = step
    return {
        "name": name, "params": sum(p.numel() for p in model.parameters()), "curve": curve,
        "final": curve[-1][1], "first_95": first_95, "seconds": time.perf_counter() - start,
        "train_acc": sum(train_correct[-eval_every:]) / len(train_correct[-eval_every:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and test clips (a smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 1000, quick 150)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--background", choices=("silence", "random"), default="silence",
                        help="what the segments without an event hold")
    parser.add_argument("--coverage", type=float, default=1.0, help="fraction of a segment an event fills")
    parser.add_argument("--offset", choices=("same", "random"), default="same",
                        help="with --coverage < 1: where the second copy of an event sits (same place or not)")
    parser.add_argument("--noise", type=float, default=0.1, help="per-segment noise standard deviation")
    parser.add_argument("--train-clips", type=int, default=0,
                        help="train on a fixed set of this many clips (default 0: fresh clips every step)")
    parser.add_argument("--test-clips", type=int, default=None, help="held-out clips (default 1024, quick 256)")
    parser.add_argument("--relation-set", dest="relation_set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the relation model's recipe, e.g. relation.position_encoding=none (repeatable)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these tensors are too small to gain from more)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (150 if args.quick else 1000)
    test_clips = args.test_clips or (256 if args.quick else 1024)
    eval_every = max(1, steps // 5)
    torch.set_num_threads(args.threads)
    task = {"background": args.background, "coverage": args.coverage, "offset": args.offset, "noise": args.noise}

    overrides = tiny_overrides()  # widths 8-16-32-64, stem 8, input (N, C, F, T) = (4, 3, 32, 24)
    shape = asczoo.create_model(PLAIN, num_classes=2, overrides=overrides).input_shape
    test = make_clips(test_clips, shape, generator=torch.Generator().manual_seed(12345), **task)
    source = f"a fixed set of {args.train_clips} clips" if args.train_clips else "fresh clips every step"
    print(f"task: same event twice vs two different events in 2 of N segments; input (N, C, F, T) = {shape}; "
          f"background {args.background}, coverage {args.coverage:g}"
          + (f" (offset {args.offset})" if args.coverage < 1 else "") + f", noise {args.noise:g}; "
          f"{test_clips} held-out clips ({float(test[1].float().mean()):.1%} repeats)")
    print(f"training: {source}, Adam lr {args.lr:g}, batch {args.batch}, {steps} steps; stage widths "
          f"{overrides['backbone']['channels']}, stem {overrides['backbone']['stem_width']}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    relation_overrides = deep_merge(overrides, parse_overrides(args.relation_set))
    if args.relation_set:
        print(f"relation model overrides: {', '.join(args.relation_set)}")
    results = [
        train(name, overrides=ov, task=task, steps=steps, batch=args.batch, lr=args.lr,
              train_clips=args.train_clips, eval_every=eval_every, test=test, seed=args.seed)
        for name, ov in ((PLAIN, overrides), (RELATION, relation_overrides))
    ]
    steps_shown = [s for s, _ in results[0]["curve"]]
    print()
    print(f"{'model':<20} {'params':>8} " + " ".join(f"{'@' + str(s):>6}" for s in steps_shown)
          + f" {'train':>6} {'>=95% at':>8} {'seconds':>7}")
    for r in results:
        print(f"{r['name']:<20} {r['params']:>8,} " + " ".join(f"{a:>6.1%}" for _, a in r["curve"])
              + f" {r['train_acc']:>6.1%} {str(r['first_95'] or '-'):>8} {r['seconds']:>7.1f}")
    print("(held-out accuracy after each number of steps; 'train': accuracy on the last steps' batches; "
          "chance is 50 %)")
    plain, relation = results
    print(f"RESULT relation_acc={relation['final']:.4f} plain_acc={plain['final']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
