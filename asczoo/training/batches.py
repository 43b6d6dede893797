"""Training batches: segment samples, the epoch order shared by all ranks, features held on the
device or streamed from the feature cache.

**Batches.** An epoch's order is a permutation drawn from ``(seed, stage, epoch)`` alone. Global batch
``b`` is positions ``b*B .. (b+1)*B`` of it; rank ``r`` of ``W`` takes the ``r``-th of ``W`` near-equal
contiguous parts. Training drops a last incomplete global batch (``drop_last``) unless it would be the
only one.

**Features on the device.** When the training and evaluation features fit (``data_on_device``), they
are read from the cache once and held as one tensor on the device (float16 when the cache stores
float16); batches are gathered by index there. Otherwise a DataLoader streams them from the cache
with worker processes and pinned memory.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from asczoo.training.runtime import Runtime, derive_seed


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
