"""Atomic file writes: a file either has its complete new content or is not touched at all.

Everything asczoo writes that another step later trusts (feature shards, cache manifests,
normalisation statistics, checkpoints, exported models) goes through here. The content is written to
a temporary file in the destination's directory (same file system), flushed and fsync'ed, then moved
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. A crash or a
``kill`` in the middle leaves at most a stray ``.NAME.*.tmp`` file, never a half-written ``NAME``.

An output made of several files (a quantised model folder, a DCASE package) is written with
:func:`atomic_directory`: into a ``.NAME-*.staging`` folder beside it, moved into place last. A command
that writes ``NAME`` holds :func:`exclusive_output` meanwhile, so a second process on the same output is
refused with the holder's PID, and what a writer killed earlier left behind (its ``.tmp`` files and
``.staging`` folders) is removed before the new write starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

__all__ = ["atomic_write", "atomic_write_text", "atomic_save_safetensors", "atomic_directory", "exclusive_output",
           "OutputInUseError", "TEMP_SUFFIX", "STAGING_SUFFIX"]

#: suffix of the temporary files; a directory scan may ignore (or clean up) files ending in it
TEMP_SUFFIX = ".tmp"
#: suffix of the folders a multi-file output is assembled in (see :func:`atomic_directory`)
STAGING_SUFFIX = ".staging"


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


class OutputInUseError(RuntimeError):
    """Another process is writing the same output (see :func:`exclusive_output`)."""


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the output ``path`` for one writer while the ``with`` block runs.

    The lock is ``.NAME.lock`` beside ``path``, held with ``fcntl.flock``: the kernel drops it when the
    process ends however it ends (``kill -9`` too), so a lock file left behind is never stale. A second
    process gets :class:`OutputInUseError` naming the holder, at once rather than after its own work
    is done twice. Once held, the leftovers of an earlier writer of ``path`` that was killed (its
    ``.NAME.*.tmp`` files and ``.NAME-*.staging`` folders) are removed. The lock file is removed on
    the way out. Where ``fcntl`` does not exist (Windows) outputs are not locked.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    fd = _take_lock(lock, target)
    try:
        _remove_leftovers(target)
        yield target
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # while still held: a waiter that opened it re-checks the inode and retries
            os.close(fd)


def _take_lock(lock: Path, target: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    import socket

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputInUseError(f"{target} is being written by another asczoo process ({holder}); wait for it "
                                   "to finish, or choose another output") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file its previous holder removed between our open and our flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)


def _remove_leftovers(target: Path) -> None:
    """Remove what a killed writer of ``target`` left: ``.NAME.*.tmp`` files, ``.NAME-*.staging`` folders."""
    files, folders = f".{target.name}.", f".{target.name}-"
    for entry in os.scandir(target.parent):
        if entry.name.startswith(files) and entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        elif (entry.name.startswith(folders) and entry.name.endswith(STAGING_SUFFIX)
              and entry.is_dir(follow_symlinks=False)):
            shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Assemble a folder that replaces ``path`` when the ``with`` block succeeds.

    Yields an empty staging folder beside ``path`` (same file system) to write into; on success an
    existing ``path`` is moved aside, the staging folder renamed to ``path`` and the old one removed.
    If the block raises, the staging folder is removed and ``path`` is left as it was; an ``OSError``
    (a full disk, a read-only folder) is raised again as one naming ``path``, saying nothing was
    written. The whole write holds :func:`exclusive_output`.
    """
    target = Path(path)
    with exclusive_output(target):
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=STAGING_SUFFIX, dir=target.parent))
        try:
            yield staging
            old = None
            if target.exists() or target.is_symlink():
                old = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}.old{STAGING_SUFFIX}"
                os.rename(target, old)
            os.replace(staging, target)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
                raise OSError(exc.errno, f"{target}: could not be written ({exc.strerror}); nothing was "
                              "written") from None
            raise
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        _fsync_dir(target.parent)
