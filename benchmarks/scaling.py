"""How one ATReSN block's time and peak memory grow with the clip: N = 8, 16, 32, 64 segments.

The segment keeps its size (stage 2 of ResNet-18 at the DCASE input: C = 128, 16 x 10 points), so a
clip of N segments has P = 160 N points; k = 8, B = 16 (the paper's stage-2 batch), forward +
backward in train mode. asczoo's block and the dense reference of :mod:`benchmarks.relation_block`
(same function, the authors' formulation with a full ``P x P`` distance matrix) are measured alike.

Peak memory is measured in a fresh process (:func:`benchmarks.common.peak_memory`) under a memory
budget for the block's working memory (``--budget-gib``, default 4 GiB above the resident model and
inputs, enforced with ``RLIMIT_DATA``): a variant that needs more fails there and is reported as not
fitting, instead of driving this shared machine into swap. At N = 64 and B = 16 one ``B x P x P``
float32 matrix alone is 6.25 GiB. Time (median of interleaved repeats) is measured only where
the variant fits. The growth exponent is the least-squares slope of log(peak) against log(P): 2 for
memory dominated by the ``P x P`` distance matrix, 1 for memory linear in the number of points.

Run: ``python -m benchmarks.scaling [--quick]`` (``--quick``: B = 1, N = 8, 16, 32); last line
``RESULT memory_exponent=...`` (asczoo's block), with ``dense_memory_exponent`` and
``largest_fitting_segments`` of both.
"""

from __future__ import annotations

import math

from benchmarks import common
from benchmarks.relation_block import build, train_step

CHANNELS, FREQ, TIME, K = 128, 16, 10, 8
GiB = 1024 ** 3


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, help="batch (default 16; 1 with --quick)")
    p.add_argument("--budget-gib", type=float, default=4.0, help="memory budget per variant (default 4 GiB)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    batch = args.batch or (1 if args.quick else 16)
    segments = (8, 16, 32) if args.quick else (8, 16, 32, 64)
    repeats = 2 if args.quick else 3
    budget = int(args.budget_gib * GiB)

    peaks: dict[str, dict[int, float | None]] = {"asczoo": {}, "dense": {}}
    times: dict[str, dict[int, float | None]] = {"asczoo": {}, "dense": {}}
    for n in segments:
        sizes = dict(batch=batch, segments=n, channels=CHANNELS, freq=FREQ, time=TIME, k=K)
        fits = {}
        for impl in ("asczoo", "dense"):
            mem = common.peak_memory("benchmarks.relation_block:memory_step", {"impl": impl, **sizes},
                                     threads=args.threads, limit_bytes=budget)
            fits[impl] = mem["ok"]
            peaks[impl][n] = mem["peak"] if mem["ok"] else None
            if not mem["ok"]:
                print(f"  N={n} {impl}: does not fit in {args.budget_gib:g} GiB ({mem['error']})")
        steps = {}
        for impl in ("asczoo", "dense"):
            if fits[impl]:
                steps[impl] = train_step(*build(impl, **sizes))
        timed = common.interleave(steps, repeats=repeats) if steps else {}
        for impl in ("asczoo", "dense"):
            times[impl][n] = timed[impl].median if impl in timed else None
        del steps, timed
        print(f"  measured N={n}", flush=True)

    rows = []
    for n in segments:
        pts = n * FREQ * TIME
        rows.append([n, pts, common.fmt_ms(times["asczoo"][n]), common.fmt_ms(times["dense"][n]),
                     common.fmt_mib(peaks["asczoo"][n]) if peaks["asczoo"][n] is not None else "does not fit",
                     common.fmt_mib(peaks["dense"][n]) if peaks["dense"][n] is not None else "does not fit",
                     f"{pts * pts * batch * 4 / 2 ** 20:.0f}"])
    print(f"\nATReSN block, B = {batch}, C = {CHANNELS}, {FREQ} x {TIME} points per segment, k = {K}, forward + "
          f"backward; budget {args.budget_gib:g} GiB per variant; time: median of {repeats} interleaved repeats")
    print(common.table(["N", "P", "asczoo ms", "dense ms", "peak asczoo MiB", "peak dense MiB",
                        "one B x P x P float32 MiB"], rows))

    def exponent(impl: str, what: dict) -> float:
        ns = [n for n in segments if what[impl][n]]
        return slope([n * FREQ * TIME for n in ns], [what[impl][n] for n in ns])

    mem_exp, dense_exp = exponent("asczoo", peaks), exponent("dense", peaks)
    time_exp = exponent("asczoo", times)
    largest = {impl: max([n for n in segments if peaks[impl][n] is not None], default=0) for impl in peaks}
    print(f"growth exponents (peak memory ~ P^e): asczoo {mem_exp:.2f}, dense {dense_exp:.2f}; "
          f"asczoo time ~ P^{time_exp:.2f}")
    print(f"largest clip that fits in {args.budget_gib:g} GiB: asczoo N = {largest['asczoo']}, "
          f"dense N = {largest['dense']}")
    print(common.result_line(memory_exponent=mem_exp, dense_memory_exponent=dense_exp, time_exponent=time_exp,
                             largest_fitting_segments=largest["asczoo"],
                             dense_largest_fitting_segments=largest["dense"], batch=batch,
                             budget_gib=args.budget_gib))
    return {"env": env, "memory_exponent": mem_exp, "peaks": peaks, "times": times}


if __name__ == "__main__":
    main()
