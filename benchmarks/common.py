"""What every benchmark shares: arguments, the environment, timing, peak memory, tables, the RESULT line.

Timing. :func:`interleave` runs the variants of one comparison round-robin (A, B, A, B, ...) after a
warm-up and reports the median of each, so that a slow spell of a shared machine hits both sides and
ratios stay robust. Thread count is set explicitly (``--threads``, default 2) and printed.

Peak memory on CPU. PyTorch keeps no allocator statistics for the CPU, so :func:`peak_memory` runs a
step in a fresh Python process and reads the kernel's resident-set high-water mark: the child runs
the step once (warm-up: library workspaces, lazily created buffers), resets the high-water mark
(``/proc/self/clear_refs``, value 5), runs the step again and reports ``VmHWM - VmRSS`` at the reset,
i.e. the memory the step needed above what was already resident (model, inputs). glibc is told to
serve every allocation of 64 KiB or more with its own ``mmap`` and to return it on ``free``
(``MALLOC_MMAP_THRESHOLD_``), so resident memory follows the live tensors instead of the allocator's
caching. On CUDA, :func:`peak_memory` uses ``torch.cuda.max_memory_allocated`` in-process instead.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

DATE = datetime.date.today().isoformat()
MiB = 1024 ** 2


# -- arguments and environment ----------------------------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--quick`` and ``--threads``."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: under a minute on 2 CPU cores")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    return p


def setup(threads: int) -> dict[str, Any]:
    """Fix the thread count and deterministic seeds; return (and print) the environment."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    env = environment()
    print(format_environment(env))
    return env


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Machine and versions, as recorded in RESULTS.md."""
    import numpy

    try:
        import torchaudio
        ta = torchaudio.__version__
    except Exception:  # torchaudio is optional for most benchmarks
        ta = "absent"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": DATE,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": ta,
        "numpy": numpy.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def format_environment(env: Mapping[str, Any]) -> str:
    return (
        f"# {env['date']}  {env['cpu']} ({env['cores']} cores, {env['memory_gib']} GiB), "
        f"torch threads {env['threads']}, GPU: {env['gpu']}, load average {env['load']}\n"
        f"# python {env['python']}, torch {env['torch']} ({env['cpu_capability']}), "
        f"torchaudio {env['torchaudio']}, numpy {env['numpy']}"
    )


# -- timing -----------------------------------------------------------------------------------------

@dataclass
class Timing:
    """Seconds of each repeat; ``median`` is what tables report."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def spread(self) -> float:
        """Half the distance between the 25th and 75th percentiles, relative to the median."""
        if len(self.samples) < 4:
            return math.nan
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / 2 / self.median


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleave(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1, device: str | None = None
) -> dict[str, Timing]:
    """Time each callable ``repeats`` times, round-robin, after ``warmup`` untimed calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    out = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out[name].samples.append(time.perf_counter() - start)
    return out


def time_one(fn: Callable[[], Any], *, repeats: int, warmup: int = 1, device: str | None = None) -> Timing:
    return interleave({"x": fn}, repeats=repeats, warmup=warmup, device=device)["x"]


# -- peak memory ------------------------------------------------------------------------------------

_CHILD_ENV = {
    # every allocation >= 64 KiB gets its own mmap, returned to the kernel on free (no dynamic threshold)
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
}


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def peak_memory(target: str, kwargs: Mapping[str, Any], *, threads: int, timeout: float = 1800,
                limit_bytes: int | None = None) -> dict[str, Any]:
    """Peak extra memory of one call of the step that ``target`` builds, measured in a fresh process.

    ``target`` is ``"module:function"``; ``function(**kwargs)`` builds what it needs (model, inputs)
    and returns a zero-argument step. Returns ``{"peak": bytes, "ok": bool, "error": str | None}``.
    With ``limit_bytes`` the child's data segment is capped (``RLIMIT_DATA``) at what was resident
    before the step plus ``limit_bytes``: a step that needs more fails there (``ok`` False) instead
    of pushing the machine into swap or the OOM killer.
    """
    cmd = [sys.executable, "-m", "benchmarks.common", "--memory-child", target, json.dumps(dict(kwargs)),
           str(threads), str(limit_bytes or 0)]
    env = {**os.environ, **_CHILD_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"peak": None, "ok": False, "error": tail[0][:200]}


def probe(mib: int):
    """A step that allocates and touches ``mib`` MiB and frees it: calibrates :func:`peak_memory`."""
    def step():
        torch.ones(mib * MiB // 4)
    return step


def _memory_child(target: str, kwargs_json: str, threads: int, limit: int) -> None:
    import resource

    torch.set_num_threads(threads)
    module, function = target.split(":")
    step = getattr(importlib.import_module(module), function)(**json.loads(kwargs_json))
    result: dict[str, Any] = {"peak": None, "ok": True, "error": None}
    try:
        if limit:
            # a warm-up at full size could already exceed the cap: first cap, then warm up
            gc.collect()
            base_data = _data_segment()
            resource.setrlimit(resource.RLIMIT_DATA, (base_data + limit, resource.RLIM_INFINITY))
        step()  # warm-up
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status()["VmRSS"]
        step()
        result["peak"] = _proc_status()["VmHWM"] - before
    except (RuntimeError, MemoryError) as exc:
        result.update(ok=False, error=str(exc).splitlines()[0][:200])
    print("MEMORY " + json.dumps(result), flush=True)


def _data_segment() -> int:
    """Bytes of the private writable mappings the kernel counts against RLIMIT_DATA (VmData)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def cuda_peak_memory(step: Callable[[], Any]) -> int:
    """Peak bytes allocated by one call of ``step`` above what was allocated before it (CUDA)."""
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


# -- output -----------------------------------------------------------------------------------------

def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.1f}"


def fmt_mib(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / MiB:.0f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.2f}x"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    text = str(v)
    if not text or any(c.isspace() or c == "=" for c in text):
        raise ValueError(f"RESULT value {text!r} must be non-empty without spaces or '='")
    return text


def result_line(**values: Any) -> str:
    """``RESULT key=value ...``: the last line every benchmark prints."""
    return "RESULT " + " ".join(f"{k}={_value(v)}" for k, v in values.items())


def parse_result(text: str) -> dict[str, str]:
    """The key/value pairs of the last ``RESULT`` line of a benchmark's output."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("RESULT"):
            return dict(item.split("=", 1) for item in line.split()[1:])
    raise ValueError("no RESULT line")


def ratio(a: float | None, b: float | None) -> float:
    return math.nan if not a or not b else a / b


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit("usage: python -m benchmarks.common --memory-child MODULE:FUNCTION KWARGS_JSON THREADS LIMIT")
