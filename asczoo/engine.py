"""The training engine: devices, precision, distributed data parallelism, batches, the epoch loop.

Plain PyTorch. One process per device; under ``torchrun`` the processes form a group (NCCL on CUDA,
gloo on CPU) and the model is wrapped in ``DistributedDataParallel``.

**Batches.** An epoch's order is a permutation drawn from ``(seed, stage, epoch)`` alone. Global batch
``b`` is positions ``b*B .. (b+1)*B`` of it; rank ``r`` of ``W`` takes the ``r``-th of ``W`` near-equal
contiguous parts. Each rank's loss is its summed sample losses times ``W / B_global``, so DDP's
gradient average is exactly the mean over the global batch, whatever the split. Training drops a last
incomplete global batch (``drop_last``) unless it would be the only one.

**What a multi-process run equals.** With ``sync_batchnorm`` (statistics of the global batch, see
:class:`GlobalBatchNorm`), no dropout and no random augmentation, W processes compute what one process
computes on the same global batches, up to float rounding: the gloo test checks it. Otherwise batch
norm sees each rank's part of the batch (plain DDP behaviour, the usual choice), and dropout and
augmentations draw per rank: the same procedure in distribution, not bit for bit.

**Randomness.** At the start of every epoch the Python, NumPy and torch generators are seeded from
``(seed, stage, epoch, rank)``, so an epoch's randomness does not depend on what ran before it: a run
resumed from the checkpoint of epoch ``e`` redoes epoch ``e + 1`` exactly as the uninterrupted run did.

**Features on the device.** When the training and evaluation features fit (``data_on_device``), they
are read from the cache once and held as one tensor on the device (float16 when the cache stores
float16); batches are gathered by index there. Otherwise a DataLoader streams them from the cache
with worker processes and pinned memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, Dataset

# -- runtime: device, ranks, precision ----------------------------------------------------------------------


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


def setup_runtime(engine: Mapping[str, Any]) -> Runtime:
    """Pick the device, join the process group under ``torchrun``, resolve the ``auto`` settings."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = engine.get("device", "auto")
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
    precision = engine.get("precision", "auto")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = engine.get("channels_last", "auto")
    if channels_last == "auto":
        channels_last = device.type == "cuda"
    if engine.get("threads"):
        torch.set_num_threads(int(engine["threads"]))
    elif device.type == "cpu" and world_size > 1:  # processes share the cores: do not oversubscribe them
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    workers = engine.get("num_workers", "auto")
    if workers == "auto":
        per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        workers = max(0, min(8, per_process - 1))
    progress = engine.get("progress", "auto")
    if progress == "auto":
        progress = sys.stderr.isatty()
    if engine.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(
        device=device, rank=rank, world_size=world_size, local_rank=local_rank, precision=precision,
        channels_last=bool(channels_last), compile=engine.get("compile", False),
        sync_batchnorm=bool(engine.get("sync_batchnorm", False)), num_workers=int(workers),
        data_on_device=engine.get("data_on_device", "auto"), progress=bool(progress) and rank == 0,
        owns_group=owns_group, wait_group=wait_group,
    )


def teardown_runtime(runtime: Runtime) -> None:
    """Leave the process group if :func:`setup_runtime` joined it."""
    if runtime.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# -- seeding ------------------------------------------------------------------------------------------------

def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# -- batch norm over the global batch -------------------------------------------------------------------------

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


# -- data: samples, batch order, features in memory or streamed ----------------------------------------------

class SegmentSamples(Dataset):
    """A clip dataset seen as single segments: item ``i`` is segment ``i % N`` of clip ``i // N``,
    as features ``(1, 3, F, T)`` (the paper's stage 1 trains on segments)."""

    def __init__(self, clips: Dataset, segments: int) -> None:
        self.clips, self.segments = clips, segments

    def __len__(self) -> int:
        return len(self.clips) * self.segments

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        features, label = self.clips[index // self.segments]
        seg = index % self.segments
        return features[seg : seg + 1], label


class EpochBatches:
    """This rank's batches of one epoch (see the module docstring); a DataLoader ``batch_sampler``."""

    def __init__(self, num_samples: int, batch_size: int, *, runtime: Runtime, seed: int | None,
                 drop_last: bool, shuffle: bool = True) -> None:
        if num_samples < runtime.world_size:
            raise ValueError(f"{num_samples} samples cannot be split over {runtime.world_size} processes")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.runtime, self.seed, self.drop_last, self.shuffle = runtime, seed, drop_last, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        batches = list(torch.split(order, self.batch_size))
        world = self.runtime.world_size
        if len(batches) > 1 and (self.drop_last and len(batches[-1]) < self.batch_size or len(batches[-1]) < world):
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        world, rank = self.runtime.world_size, self.runtime.rank
        for batch in self.global_batches():
            yield torch.tensor_split(batch, world)[rank].tolist()

    def __len__(self) -> int:
        return len(self.global_batches())

    def global_sizes(self) -> list[int]:
        return [len(b) for b in self.global_batches()]


class Features:
    """One split's clip features and labels, held in memory (possibly on the device) or streamed."""

    def __init__(self, dataset: Dataset, *, runtime: Runtime, in_memory: bool, desc: str = "") -> None:
        self.dataset = dataset
        self.runtime = runtime
        self.labels = torch.as_tensor(list(getattr(dataset, "labels", None) or [dataset[i][1] for i in range(len(dataset))]))
        self.tensor: torch.Tensor | None = None
        if in_memory:
            self.tensor = _load_all(dataset, runtime, desc=desc)
            self.labels = self.labels.to(runtime.device)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def in_memory(self) -> bool:
        return self.tensor is not None

    def nbytes(self) -> int:
        return 0 if self.tensor is None else self.tensor.numel() * self.tensor.element_size()


def estimate_bytes(dataset: Dataset, *, half: bool | None = None) -> int:
    """Bytes of all of ``dataset``'s features held in memory: float16 when its feature cache stores
    float16 (``half=None``: ask the cache), else float32."""
    features, _ = dataset[0]
    if half is None:
        store = getattr(dataset, "_store", None)
        half = getattr(store, "dtype", "float32") == "float16"
    return len(dataset) * features.numel() * (2 if half else 4)


def stream_stored_dtype(dataset: Dataset) -> Dataset:
    """Have a cache-backed dataset return features in the stored dtype (float16 for a float16 cache)
    when a DataLoader streams it: its workers and pinned buffers then move half the bytes, and the
    batch becomes float32 on the device (:class:`BatchStream`, :func:`evaluate_features`)."""
    store = getattr(dataset, "_store", None)
    if store is not None and hasattr(store, "keep_dtype"):
        store.keep_dtype = True
    return dataset


def fits_on_device(total_bytes: int, device: torch.device) -> bool:
    """Whether ``total_bytes`` of features should be held on ``device`` (see ``engine.data_on_device``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return total_bytes < 0.5 * free
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return False
    return total_bytes < 0.25 * ram


def _load_all(dataset: Dataset, runtime: Runtime, *, desc: str) -> torch.Tensor:
    """Every clip's features as one tensor ``(M, N, 3, F, T)`` on the device (float16 if lossless)."""
    from tqdm.auto import tqdm

    first, _ = dataset[0]
    half = bool(torch.equal(first, first.half().float()))  # the cache stores float16: keep it so
    dtype = torch.float16 if half else torch.float32
    out = torch.empty((len(dataset), *first.shape), dtype=dtype, device=runtime.device)
    workers = runtime.num_workers if len(dataset) >= 1000 else 0
    loader = DataLoader(dataset, batch_size=64, shuffle=False, num_workers=workers,
                        pin_memory=runtime.device.type == "cuda", generator=_own_generator())
    start = 0
    with tqdm(total=len(dataset), desc=desc, unit="clip", disable=not runtime.progress, leave=False) as bar:
        for features, _ in loader:
            out[start : start + len(features)] = features.to(runtime.device, dtype=dtype, non_blocking=True)
            start += len(features)
            bar.update(len(features))
    return out


def _own_generator() -> torch.Generator:
    """A DataLoader's own generator: creating its iterator must not draw from the global one (that would
    shift the augmentations and dropout of a streamed run against a run with features held in memory).
    Nothing in asczoo's datasets is random, so the seed does not matter."""
    return torch.Generator().manual_seed(0)


class BatchStream:
    """Batches ``(features float32 (b, n, 3, F, T), labels (b,))`` on the device for one rank."""

    def __init__(self, source: Features, *, unit: str, segments: int, batch_size: int, runtime: Runtime,
                 seed: int | None, drop_last: bool, shuffle: bool, split: str = "strided") -> None:
        self.source, self.unit, self.segments, self.runtime = source, unit, segments, runtime
        count = len(source) * (segments if unit == "segment" else 1)
        self.sampler = EpochBatches(count, batch_size, runtime=runtime, seed=seed, drop_last=drop_last,
                                    shuffle=shuffle)
        self._loader: DataLoader | None = None
        if not source.in_memory:
            stream_stored_dtype(source.dataset)
            samples = SegmentSamples(source.dataset, segments) if unit == "segment" else source.dataset
            workers = runtime.num_workers
            self._loader = DataLoader(
                samples, batch_sampler=self.sampler, num_workers=workers,
                pin_memory=runtime.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None, generator=_own_generator(),
            )

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        device = self.runtime.device
        if self._loader is not None:
            for features, labels in self._loader:
                yield (features.to(device, non_blocking=True).float(), labels.to(device, non_blocking=True))
            return
        data, labels = self.source.tensor, self.source.labels
        # this rank's indices of the whole epoch go to the device in one copy; each step slices them there
        # (an index tensor built from a Python list every step is a host-to-device copy that waits for
        # the device queue)
        world, rank = self.runtime.world_size, self.runtime.rank
        parts = [torch.tensor_split(batch, world)[rank] for batch in self.sampler.global_batches()]
        if not parts:
            return
        order = torch.cat(parts).to(device, non_blocking=False)
        for index in torch.split(order, [len(part) for part in parts]):
            if self.unit == "segment":
                clips, segs = index // self.segments, index % self.segments
                yield data[clips, segs].unsqueeze(1).float(), labels[clips]
            else:
                yield data[index].float(), labels[index]


# -- optimisers and schedules -------------------------------------------------------------------------------

def build_optimizer(model: nn.Module, spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The recipe's optimiser over the trainable parameters (weight decay on all of them, as the paper)."""
    options = {k: v for k, v in spec.items() if k != "name"}
    params = [p for p in model.parameters() if p.requires_grad]
    name = spec["name"]
    if name == "sgd":
        return torch.optim.SGD(params, **options)
    if name == "adam":
        return torch.optim.Adam(params, **{**options, "betas": tuple(options["betas"])})
    if name == "adamw":
        return torch.optim.AdamW(params, **{**options, "betas": tuple(options["betas"])})
    raise ValueError(f"unknown optimizer {name!r}")


def build_schedule(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any], epochs: int):
    """The recipe's learning-rate schedule, stepped once per epoch."""
    name = spec["name"]
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec["step_epochs"], gamma=spec["gamma"])
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec["milestones"]), gamma=spec["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=spec["min_lr"])
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r}")


def to_channels_last(module: nn.Module) -> nn.Module:
    """Channels-last weights: 4D ones ``channels_last``, 5D ones (``Conv3d``) ``channels_last_3d``.

    (``module.to(memory_format=torch.channels_last)`` refuses modules that hold 5D weights.) Convolutions
    then run in the layout tensor cores prefer, and their outputs follow it.
    """
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return module


# -- loss, evaluation ----------------------------------------------------------------------------------------

def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy against class probabilities ``targets`` (mixup blends them)."""
    if smoothing:
        targets = targets * (1.0 - smoothing) + smoothing / targets.shape[-1]
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample binary cross-entropy of multi-label logits against (multi-hot or mixed) ``targets``,
    averaged over the classes (the sigmoid/BCE loss of multi-label tasks such as FSD50K)."""
    targets = targets.float()
    if smoothing:
        targets = targets * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)


def is_multi_label(model: nn.Module) -> bool:
    """Whether the model's task is ``multi-label`` (``AscModel.task``; other modules are single-label)."""
    return getattr(model, "task", "single-label") == "multi-label"


def autocast(runtime: Runtime):
    dtype = runtime.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=dtype)


@torch.no_grad()
def evaluate_features(model: nn.Module, source: Features, *, runtime: Runtime, batch_size: int,
                      num_classes: int, predictions: bool = False) -> dict[str, Any]:
    """Clip-level loss, accuracy and confusion matrix (rows: true class, columns: predicted), reduced
    over ranks (each rank evaluates every W-th clip).

    ``predictions``: also return ``predicted``, every clip's predicted class in dataset order (for reports
    by recording device). A multi-label model (:func:`is_multi_label`) is scored by
    :func:`evaluate_multi_label` instead: ``accuracy`` then holds its mAP, the figure stages select on.
    """
    if is_multi_label(model):
        return evaluate_multi_label(model, source, runtime=runtime, batch_size=batch_size, num_classes=num_classes)
    model.eval()
    indices = list(range(runtime.rank, len(source), runtime.world_size))
    predicted_all = torch.zeros(len(source), dtype=torch.float64, device=runtime.device) if predictions else None
    offset = 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=runtime.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    if source.in_memory:  # the indices go to the device once, then are sliced there
        on_device = torch.arange(runtime.rank, len(source), runtime.world_size, device=runtime.device)
        batches = ((source.tensor[chunk].float(), source.labels[chunk]) for chunk in torch.split(on_device, batch_size))
    else:
        subset = torch.utils.data.Subset(stream_stored_dtype(source.dataset), indices)
        loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=runtime.num_workers,
                            pin_memory=runtime.device.type == "cuda", generator=_own_generator())
        batches = ((x.to(runtime.device, non_blocking=True).float(), y.to(runtime.device)) for x, y in loader)
    for features, labels in batches:
        with autocast(runtime):
            logits = model(features)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        predicted = logits.argmax(-1)
        confusion.index_put_((labels, predicted), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
        if predicted_all is not None:
            where = torch.as_tensor(indices[offset:offset + len(predicted)], device=runtime.device)
            predicted_all[where] = predicted.double()
            offset += len(predicted)
    runtime.all_reduce(confusion)
    runtime.all_reduce(loss_sum)
    result = summarize_confusion(confusion.cpu(), loss_sum=float(loss_sum))
    if predicted_all is not None:
        runtime.all_reduce(predicted_all)  # each clip was predicted by one rank, zeros elsewhere
        result["predicted"] = predicted_all.long().cpu().tolist()
    return result


@torch.no_grad()
def evaluate_multi_label(model: nn.Module, source: Features, *, runtime: Runtime, batch_size: int,
                         num_classes: int) -> dict[str, Any]:
    """Multi-label scores of a split: mean binary cross-entropy, ``mAP`` (macro average precision over
    the classes with at least one positive clip) and ``per_class_ap`` (None for a class without
    positives), computed by scikit-learn on the sigmoid outputs of every clip (gathered over ranks).
    ``accuracy`` repeats the mAP (the figure a stage keeps its best epoch by) and ``metric`` says so."""
    from sklearn.metrics import average_precision_score

    model.eval()
    indices = list(range(runtime.rank, len(source), runtime.world_size))
    scores = torch.zeros(len(source), num_classes, dtype=torch.float64, device=runtime.device)
    truth = torch.zeros(len(source), num_classes, dtype=torch.float64, device=runtime.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    for chunk in (indices[start:start + batch_size] for start in range(0, len(indices), batch_size)):
        where = torch.as_tensor(chunk, device=runtime.device)
        if source.in_memory:
            features, labels = source.tensor[where].float(), source.labels[where]
        else:
            items = [source.dataset[i] for i in chunk]
            features = torch.stack([x for x, _ in items]).to(runtime.device).float()
            labels = torch.stack([torch.as_tensor(y) for _, y in items]).to(runtime.device)
        with autocast(runtime):
            logits = model(features)
        logits = logits.float()
        loss_sum += binary_cross_entropy(logits, labels).sum().double()
        scores[where] = torch.sigmoid(logits).double()
        truth[where] = labels.double()
    runtime.all_reduce(scores)
    runtime.all_reduce(truth)
    runtime.all_reduce(loss_sum)
    y, p = truth.cpu().numpy() > 0.5, scores.cpu().numpy()
    per_class: list[float | None] = []
    for k in range(num_classes):
        per_class.append(float(average_precision_score(y[:, k], p[:, k])) if y[:, k].any() else None)
    present = [v for v in per_class if v is not None]
    mean_ap = sum(present) / len(present) if present else float("nan")
    clips = len(source)
    return {"accuracy": mean_ap, "mAP": mean_ap, "metric": "mAP", "per_class_ap": per_class,
            "per_class_accuracy": per_class, "confusion": [], "clips": clips,
            "loss": float(loss_sum) / clips if clips else float("nan")}


def summarize_confusion(confusion: torch.Tensor, *, loss_sum: float | None = None) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix as integers."""
    confusion = confusion.to(torch.float64)
    total = float(confusion.sum())
    correct = float(confusion.diagonal().sum())
    per_class_total = confusion.sum(1)
    per_class = torch.where(per_class_total > 0, confusion.diagonal() / per_class_total.clamp_min(1), torch.nan)
    result = {
        "accuracy": correct / total if total else float("nan"),
        "per_class_accuracy": [None if math.isnan(v) else v for v in per_class.tolist()],
        "confusion": confusion.round().long().tolist(),
        "clips": int(total),
    }
    if loss_sum is not None:
        result["loss"] = loss_sum / total if total else float("nan")
    return result


# -- the stage loop -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class StageSpec:
    """What :func:`fit` needs to know about one stage (from the training recipe)."""

    name: str
    index: int
    unit: str
    epochs: int
    batch_size: int
    optimizer: dict[str, Any]
    schedule: dict[str, Any]
    augment: list[dict[str, Any]]
    label_smoothing: float
    drop_last: bool
    keep: str
    eval_every: int
    eval_at_start: bool
    eval_batch_size: int
    seed: int
    #: knowledge distillation (asczoo.distill): the training labels are rows [label, *teacher logits]
    distill: dict[str, Any] | None = None


class MetricsLog:
    """``metrics.jsonl`` (one line per epoch) rewritten atomically from the history, and TensorBoard."""

    def __init__(self, directory: Path, *, runtime: Runtime, tensorboard: bool | str, purge_step: int | None,
                 prefix: str, run_metrics: Path | None = None, previous: Sequence[Mapping[str, Any]] = ()) -> None:
        self.directory = directory
        self.run_metrics, self.previous = run_metrics, list(previous)
        self.runtime = runtime
        self.prefix = prefix
        self.writer = None
        self.tensorboard_note = ""
        if runtime.is_main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard is True:
                    raise RuntimeError("engine.tensorboard is true but tensorboard is not installed "
                                       "(pip install tensorboard)") from None
                self.tensorboard_note = "TensorBoard logs skipped: pip install tensorboard to get them"
            else:
                self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"), purge_step=purge_step)

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        if not self.runtime.is_main:
            return
        from asczoo.atomic import atomic_write_text

        def lines(rows: Sequence[Mapping[str, Any]]) -> str:
            return "".join(json.dumps(dict(row), default=_json_default) + "\n" for row in rows)

        atomic_write_text(self.directory / "metrics.jsonl", lines(history))
        if self.run_metrics is not None:  # the run's file: earlier stages, then this one
            atomic_write_text(self.run_metrics, lines([*self.previous, *history]))

    def scalars(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = int(row["epoch"])
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "stage_index"):
                self.writer.add_scalar(f"{self.prefix}/{key}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def fit(
    model: nn.Module,
    stage: StageSpec,
    *,
    train: Features,
    evaluate: Features,
    runtime: Runtime,
    directory: Path,
    tensorboard: bool | str = "auto",
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = print,
    run_metrics: Path | None = None,
    previous_history: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Train one stage, resuming from its checkpoint if there is one; returns the stage's summary.

    Writes (rank 0) ``checkpoint.json`` + ``checkpoints/`` every epoch, ``metrics.jsonl`` and
    TensorBoard logs. The returned dict has ``history``, ``best`` (epoch, accuracy, evaluation) and
    ``kept_state`` (the weights the stage hands on: best or last, per ``stage.keep``).
    """
    from tqdm.auto import tqdm

    from asczoo.augment import create_augmentations, one_hot
    from asczoo.checkpoint import Checkpointer, set_rng_state

    module = model.to(runtime.device)
    if runtime.channels_last:
        to_channels_last(module)
    num_classes = module.num_classes
    multi_label = is_multi_label(module)
    optimizer = build_optimizer(module, stage.optimizer)
    schedule = build_schedule(optimizer, stage.schedule, stage.epochs)
    augment = create_augmentations(stage.augment)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    checkpointer = Checkpointer(directory, writer=runtime.is_main)
    checkpointer.clean_temporary()

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 1
    info = checkpointer.latest()
    if info is not None:
        weights, state = checkpointer.load(info)
        module.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history = json.loads(state["history"])
        best = json.loads(state["best"]) if state.get("best") else None
        start_epoch = int(state["epoch"]) + 1
        log(f"{stage.name}: resuming after epoch {state['epoch']} of {stage.epochs}")

    runner: nn.Module = module
    if runtime.compile:
        # the model is compiled, then wrapped by DDP: compiling the DDP wrapper traces DDP's own Python
        # (its logger, record_function, _inside_ddp_forward), which dynamo breaks at; the model graph
        # itself, GlobalBatchNorm's all-reduces included, compiles whole
        mode = None if runtime.compile is True else runtime.compile
        runner = torch.compile(runner, mode=mode)
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(runner, device_ids=device_ids,
                                                     broadcast_buffers=not runtime.sync_batchnorm)
    sync_bn = GlobalBatchNorm() if runtime.distributed and runtime.sync_batchnorm else contextlib.nullcontext()

    segments = module.input_shape[0]
    stream = BatchStream(train, unit=stage.unit, segments=segments, batch_size=stage.batch_size, runtime=runtime,
                         seed=derive_seed(stage.seed, stage.index), drop_last=stage.drop_last, shuffle=True)
    global_sizes = stream.sampler.global_sizes()
    logger = MetricsLog(directory, runtime=runtime, tensorboard=tensorboard,
                        purge_step=start_epoch if info is not None else None, prefix=stage.name,
                        run_metrics=run_metrics, previous=previous_history)
    if logger.tensorboard_note and start_epoch == 1:
        log(logger.tensorboard_note)
    unit_name = "segments" if stage.unit == "segment" else "clips"

    def evaluate_now() -> dict[str, Any]:
        return evaluate_features(module, evaluate, runtime=runtime, batch_size=stage.eval_batch_size,
                                 num_classes=num_classes)

    def is_better(result: dict[str, Any]) -> bool:
        return best is None or result["accuracy"] > best["accuracy"]

    best_state: dict[str, torch.Tensor] | None = None
    if start_epoch == 1 and stage.eval_at_start:
        result = evaluate_now()
        row = {"stage": stage.name, "epoch": 0, "lr": optimizer.param_groups[0]["lr"], "eval_loss": result["loss"],
               "eval_accuracy": result["accuracy"]}
        history.append(row)
        log(f"{stage.name} epoch 0 (initialised): eval accuracy {100 * result['accuracy']:.2f}%")
    for callback in callbacks:
        if hasattr(callback, "on_fit_start"):
            callback.on_fit_start(stage=stage, model=module, start_epoch=start_epoch)

    epoch_times = [row["seconds"] for row in history if "seconds" in row]
    for epoch in range(start_epoch, stage.epochs + 1):
        seed_everything(derive_seed(stage.seed, stage.index, epoch, runtime.rank))
        runner.train()
        began = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64, device=runtime.device)  # loss sum, correct, count
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(total=len(global_sizes), desc=f"{stage.name} {epoch}/{stage.epochs}", unit="batch",
                   disable=not runtime.progress, leave=False, dynamic_ncols=True)
        seen, shown = 0, -1.0
        for step, (features, labels) in enumerate(stream.epoch(epoch)):
            teacher = None
            if stage.distill is not None:  # rows [label, *teacher logits] (asczoo.distill.WithTeacher)
                labels, teacher = labels[:, 0].long(), labels[:, 1:]
            targets = labels.float() if multi_label else one_hot(labels, num_classes)
            features, targets = augment(features, targets)
            with sync_bn, autocast(runtime):
                logits = runner(features)
            losses = (binary_cross_entropy if multi_label else soft_cross_entropy)(logits, targets,
                                                                                    stage.label_smoothing)
            if teacher is not None:
                from asczoo.kd_loss import distillation_loss

                losses = distillation_loss(logits, teacher, losses, weight=stage.distill["lambda"],
                                           tau=stage.distill["tau"])
            loss = losses.sum() * (runtime.world_size / global_sizes[step])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                if multi_label:  # the top-scoring class is one of the clip's labels
                    correct = (targets.gather(-1, logits.argmax(-1, keepdim=True)) > 0.5).sum()
                else:
                    correct = (logits.argmax(-1) == targets.argmax(-1)).sum()
                # device-side sums, the count as a plain number: no host tensor, no wait for the device
                totals[:2] += torch.stack([losses.detach().sum().double(), correct.double()])
                totals[2] += len(labels)
            seen += global_sizes[step]
            if runtime.progress:
                bar.update(1)
                elapsed = time.perf_counter() - began
                if elapsed - shown < 0.5 and step + 1 < len(global_sizes):
                    continue  # reading the totals synchronises with the GPU: twice a second is enough
                shown = elapsed
                clips = seen / (segments if stage.unit == "segment" else 1)
                bar.set_postfix_str(f"loss {float(totals[0] / totals[2]):.3f} acc {100 * float(totals[1] / totals[2]):.1f}% "
                                    f"{clips / max(elapsed, 1e-9):.0f} clips/s")
        bar.close()
        schedule.step()
        runtime.all_reduce(totals)
        seconds = time.perf_counter() - began
        row = {
            "stage": stage.name, "epoch": epoch, "lr": lr,
            "train_loss": float(totals[0] / totals[2]), "train_accuracy": float(totals[1] / totals[2]),
            f"{unit_name}_per_s": float(totals[2]) / seconds,
            "clips_per_s": float(totals[2]) / seconds / (segments if stage.unit == "segment" else 1),
            "seconds": seconds,
        }
        improved = False
        if epoch % stage.eval_every == 0 or epoch == stage.epochs:
            result = evaluate_now()
            row.update({"eval_loss": result["loss"], "eval_accuracy": result["accuracy"]})
            if is_better(result):
                best = {"epoch": epoch, "accuracy": result["accuracy"], "evaluation": result}
                improved = True
        row["best_accuracy"] = best["accuracy"] if best else None
        row["best_epoch"] = best["epoch"] if best else None
        history.append(row)
        epoch_times.append(seconds)
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        state = {
            "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": _rng(),
            "history": json.dumps(history, default=_json_default),
            "best": json.dumps(best, default=_json_default) if best else "",
        }
        checkpointer.save(
            epoch=epoch, model_state=module.state_dict(), state=state,
            best_state=best_state if improved else None,
            best={"epoch": best["epoch"], "accuracy": best["accuracy"]} if improved else None,
            metadata={"stage": stage.name},
        )
        logger.write(history)
        logger.scalars(row)
        runtime.barrier()
        eta = (sum(epoch_times) / len(epoch_times)) * (stage.epochs - epoch)
        evaluation = (f"  eval {100 * row['eval_accuracy']:.2f}% (best {100 * best['accuracy']:.2f}% @ {best['epoch']})"
                      if "eval_accuracy" in row else "")
        log(f"{stage.name} epoch {epoch}/{stage.epochs}  loss {row['train_loss']:.4f}  "
            f"acc {100 * row['train_accuracy']:.2f}%{evaluation}  lr {lr:.3g}  "
            f"{row['clips_per_s']:.1f} clips/s  {seconds:.1f}s  ETA {_format_eta(eta)}")
        for callback in callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(stage=stage, epoch=epoch, metrics=row)
    logger.close()

    final = checkpointer.latest() if runtime.is_main else None
    last_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if stage.keep == "best" and best is not None:
        if best_state is None:  # the best epoch was before a resume: read it back
            info = final if final is not None else checkpointer.latest()
            best_state = checkpointer.load_best(info) if info else None
        kept = best_state if best_state is not None else last_state
    else:
        kept = last_state
    return {"history": history, "best": best, "kept_state": kept, "last_epoch": stage.epochs}


def _rng() -> dict[str, Any]:
    from asczoo.checkpoint import rng_state

    return rng_state()
