"""The runtime of a training run: device, ranks, precision, seeding, batch norm over the global batch.

Plain PyTorch. One process per device; under ``torchrun`` the processes form a group (NCCL on CUDA,
gloo on CPU). :func:`setup_runtime` resolves the recipe's ``engine`` settings
(:class:`asczoo.recipes.settings.EngineSettings`) into a :class:`Runtime`.

**Randomness.** At the start of every epoch the Python, NumPy and torch generators are seeded from
``(seed, stage, epoch, rank)`` (:func:`derive_seed`, :func:`seed_everything`), so an epoch's randomness
does not depend on what ran before it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import random
import sys
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from asczoo.recipes.settings import EngineSettings


@dataclasses.dataclass
class Runtime:
    """Where and how this process runs."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    precision: str = "fp32"  # "bf16" | "fp16" | "fp32"
    channels_last: bool = False
    compile: bool | str = False
    sync_batchnorm: bool = False
    num_workers: int = 0
    data_on_device: bool | str = "auto"
    progress: bool = True
    owns_group: bool = False
    #: a gloo group with a long timeout for :meth:`wait_for_main` (None in one process)
    wait_group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wait_for_main(self) -> None:
        """Wait until rank 0 gets here, however long it takes (it may be extracting a feature cache).

        The default group's barrier is subject to its timeout (NCCL's watchdog ends the job after 30
        minutes), and a first feature extraction of a large dataset can take longer. This barrier runs
        in a gloo group made for it with a timeout of :data:`WAIT_FOR_MAIN_TIMEOUT`, and waiting ranks
        block in a socket read (no spinning core)."""
        if self.distributed:
            dist.barrier(group=self.wait_group)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place, and returned); a no-op in one process."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def describe(self) -> str:
        parts = [str(self.device), self.precision]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append(f"compile={self.compile}")
        if self.distributed:
            parts.append(f"DDP {self.world_size} processes" + (", synced batch norm" if self.sync_batchnorm else ""))
        return ", ".join(parts)


#: how long :meth:`Runtime.wait_for_main` waits (a first extraction of a large dataset on a slow disk)
WAIT_FOR_MAIN_TIMEOUT = datetime.timedelta(days=2)


def node_cores() -> int:
    """CPU cores this process may use (its affinity, e.g. a SLURM allocation, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def setup_runtime(engine: EngineSettings | Mapping[str, Any]) -> Runtime:
    """Pick the device, join the process group under ``torchrun``, resolve the ``auto`` settings.

    ``engine``: the recipe's ``engine`` section; missing keys take :class:`EngineSettings`' defaults."""
    settings = EngineSettings.of(engine)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = settings.device
    if wanted == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(wanted)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"engine.device is {wanted!r} but CUDA is not available here")
        torch.cuda.set_device(device)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
        owns_group = True
    wait_group = None
    if dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
        if world_size > 1:  # every rank creates it, in the same order: a collective call
            wait_group = dist.new_group(backend="gloo", timeout=WAIT_FOR_MAIN_TIMEOUT)
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = settings.channels_last
    if channels_last == "auto":
        channels_last = device.type == "cuda"
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    elif device.type == "cpu" and world_size > 1:  # processes share the cores: do not oversubscribe them
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    workers = settings.num_workers
    if workers == "auto":
        per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        workers = max(0, min(8, per_process - 1))
    progress = settings.progress
    if progress == "auto":
        progress = sys.stderr.isatty()
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(
        device=device, rank=rank, world_size=world_size, local_rank=local_rank, precision=precision,
        channels_last=bool(channels_last), compile=settings.compile,
        sync_batchnorm=bool(settings.sync_batchnorm), num_workers=int(workers),
        data_on_device=settings.data_on_device, progress=bool(progress) and rank == 0,
        owns_group=owns_group, wait_group=wait_group,
    )


def teardown_runtime(runtime: Runtime) -> None:
    """Leave the process group if :func:`setup_runtime` joined it."""
    if runtime.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class GlobalBatchNorm(TorchFunctionMode):
    """While active, training-mode batch norm normalises with the statistics of all ranks' samples.

    It intercepts ``F.batch_norm`` (which every ``nn.BatchNorm*`` and timm's ``BatchNormAct2d`` call),
    so no module is replaced and every subclass keeps its behaviour. Sums go through the
    differentiable ``all_reduce`` of ``torch.distributed.nn``, so the backward pass is exact too.
    Works with gloo on CPU, where ``nn.SyncBatchNorm`` does not run. The running statistics are
    updated with the global mean and unbiased variance, as one process would.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            bound = {**dict(zip(names, args)), **kwargs}
            if bound.get("training", False):
                return _global_batch_norm(**bound)
        return func(*args, **kwargs)


def _global_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=True, momentum=0.1,
                       eps=1e-5):
    from torch.distributed.nn.functional import all_reduce

    x = input
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    compute = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(compute)
    # the count as a device tensor made from a number (no host tensor; a symbolic size when compiled)
    local = torch.cat([xf.sum(dims), xf.new_full((1,), x.numel() // x.shape[1])])
    total = all_reduce(local)
    count = total[-1]
    mean = total[:-1] / count
    centred = xf - mean.view(shape)
    var = all_reduce(centred.square().sum(dims)) / count
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            m = 0.0 if momentum is None else float(momentum)
            # the unbiased factor n / (n - 1) on the device: reading the count with .item() waited for
            # the device at every batch norm and broke a compiled graph at each one
            unbiased = var.detach() * (count / (count - 1.0).clamp(min=1.0))
            running_mean.mul_(1 - m).add_(mean.detach().to(running_mean.dtype), alpha=m)
            running_var.mul_(1 - m).add_(unbiased.to(running_var.dtype), alpha=m)
    return out.to(x.dtype)


def autocast(runtime: Runtime):
    dtype = runtime.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=dtype)
