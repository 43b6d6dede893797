"""A parallel, ordered map with a progress bar: the worker pool behind extraction, checks and synth."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset


class _Jobs(Dataset):
    def __init__(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> None:
        self.fn, self.jobs = fn, jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> Any:
        return self.fn(self.jobs[i])


def _identity(x: Any) -> Any:
    return x


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def ordered_map(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int = 0, progress: bool = True,
                desc: str = "", total: int | None = None, initial: int = 0, unit: str = "file") -> Iterator[Any]:
    """``fn(job)`` for each job, in order, in ``workers`` processes (0: this one), with a tqdm bar."""
    from tqdm.auto import tqdm

    if workers > 0 and len(jobs) > 1:
        results: Iterable[Any] = DataLoader(
            _Jobs(fn, jobs), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
            worker_init_fn=_one_thread,
        )
    else:
        results = (fn(job) for job in jobs)
    with tqdm(total=total if total is not None else initial + len(jobs), initial=initial, desc=desc, unit=unit,
              disable=not progress, dynamic_ncols=True, mininterval=0.5) as bar:
        for result in results:
            yield result
            bar.update(1)
