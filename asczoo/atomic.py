"""Atomic file writes: a file either has its complete new content or is not touched at all.

Everything asczoo writes that another step later trusts (feature shards, cache manifests,
normalisation statistics, checkpoints, exported models) goes through here. The content is written to
a temporary file in the destination's directory (same file system), flushed and fsync'ed, then moved
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. A crash or a
``kill`` in the middle leaves at most a stray ``.NAME.*.tmp`` file, never a half-written ``NAME``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

__all__ = ["atomic_write", "atomic_write_text", "atomic_save_safetensors", "TEMP_SUFFIX"]

#: suffix of the temporary files; a directory scan may ignore (or clean up) files ending in it
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                 fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when the ``with`` block succeeds.

    ``mode`` is ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8). Parent directories are
    created. If the block raises, the temporary file is removed and ``path`` is left as it was.
    ``fsync=False`` skips flushing to the disk: still all-or-nothing if the process is killed, but not
    after a power loss; meant for bulk outputs that can be made again (synthetic audio).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(path.parent)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_save_safetensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None) -> None:
    """Save a ``{name: tensor}`` mapping as a safetensors file, atomically.

    ``metadata`` values must be strings (a safetensors rule); tensors are made contiguous and moved to
    the CPU first.
    """
    from safetensors.torch import save

    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata values must be strings; not so for {bad}")
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata=dict(metadata) if metadata is not None else None)
    with atomic_write(path, "wb") as f:
        f.write(data)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
