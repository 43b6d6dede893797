"""Training checkpoints that survive ``kill -9``.

A stage directory holds::

    checkpoint.json                  the pointer: epoch, the files below, the best epoch so far
    checkpoints/epoch-0007.safetensors   model weights after epoch 7
    checkpoints/epoch-0007.state.pt      optimiser, scheduler, RNG states, epoch, history
    checkpoints/best-0005.safetensors    weights of the epoch with the best evaluation accuracy

Every file is written atomically (:mod:`asczoo.atomic`) and the pointer last, so whatever moment a
process dies, ``checkpoint.json`` names complete files of one epoch; files it no longer names are
removed only after it was replaced. Weights are safetensors; the training state is a ``torch.save``
file of tensors and plain Python values, read back only with ``torch.load(weights_only=True)``
(no unpickling of arbitrary objects). RNG states are stored as tensors and integers for that reason.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from asczoo.atomic import TEMP_SUFFIX, atomic_save_safetensors, atomic_write, atomic_write_text

FORMAT = 1
POINTER = "checkpoint.json"
SUBDIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that is there but cannot be resumed from; the message says why and what to do."""


# -- RNG states as weights_only-loadable values -----------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators, as tensors and ints."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# -- the checkpointer ---------------------------------------------------------------------------------------

class Checkpointer:
    """Writes and reads one stage's checkpoints (see the module docstring).

    ``writer``: whether this process writes (rank 0 under DDP); every process can read.
    """

    def __init__(self, directory: str | os.PathLike, *, writer: bool = True) -> None:
        self.directory = Path(directory)
        self.writer = writer

    @property
    def pointer(self) -> Path:
        return self.directory / POINTER

    def latest(self) -> dict[str, Any] | None:
        """The pointer's content, or None if the stage has no checkpoint yet.

        A pointer that is there but unusable (not JSON, another format, a file outside ``checkpoints/``,
        a file that is missing) raises :class:`CheckpointError` with the reason: resuming must never
        silently restart a stage from epoch 0, nor read a file from outside the run.
        """
        if not os.path.lexists(self.pointer):
            return None
        hint = "move the run directory away, or start a new run with another --out"
        try:
            info = json.loads(self.pointer.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise CheckpointError(f"{self.pointer}: unreadable, not the JSON asczoo writes ({reason}); {hint}") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            found = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise CheckpointError(f"{self.pointer}: not an asczoo checkpoint of format {FORMAT} "
                                  f"(format {found!r}); {hint}")
        if not isinstance(info.get("epoch"), int) or isinstance(info.get("epoch"), bool):
            raise CheckpointError(f"{self.pointer}: key 'epoch' is {info.get('epoch')!r}; expected an integer; {hint}")
        best = info.get("best")
        if best is not None and not isinstance(best, dict):
            raise CheckpointError(f"{self.pointer}: key 'best' is {best!r}; expected an object or null; {hint}")
        keys = [("weights", info.get("weights")), ("state", info.get("state"))]
        if best:
            keys.append(("best.weights", best.get("weights")))
        for key, value in keys:
            self._own_file(key, value, hint)
        return info

    def _own_file(self, key: str, value: Any, hint: str) -> Path:
        """The checkpoint file the pointer's ``key`` names, if it is a regular file in ``checkpoints/``."""
        import stat

        where = f"{self.pointer}: key {key!r}"
        if not isinstance(value, str) or not value.startswith(f"{SUBDIR}/") or "/" in value[len(SUBDIR) + 1:] \
                or value[len(SUBDIR) + 1:] in ("", ".", ".."):
            raise CheckpointError(f"{where} is {value!r}; expected a file directly in {SUBDIR}/ "
                                  f"(a checkpoint never names a file outside its stage); {hint}")
        path = self.directory / value
        real, base = path.resolve(), (self.directory / SUBDIR).resolve()
        if path.is_symlink() or real.parent != base:
            raise CheckpointError(f"{where}: {value} leads outside {self.directory / SUBDIR}; {hint}")
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise CheckpointError(f"{where} names {value}, which does not exist (the run directory was "
                                  f"modified by hand); {hint}") from None
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{where}: {value} is not a regular file; {hint}")
        return path

    def save(self, *, epoch: int, model_state: Mapping[str, torch.Tensor], state: Mapping[str, Any],
             best_state: Mapping[str, torch.Tensor] | None = None, best: Mapping[str, Any] | None = None,
             metadata: Mapping[str, str] | None = None) -> None:
        """Write epoch ``epoch``: weights, training state, and (when it changed) the best weights."""
        if not self.writer:
            return
        previous = self.latest()
        sub = self.directory / SUBDIR
        weights = f"{SUBDIR}/epoch-{epoch:04d}.safetensors"
        state_file = f"{SUBDIR}/epoch-{epoch:04d}.state.pt"
        meta = {"epoch": str(epoch), **dict(metadata or {})}
        atomic_save_safetensors(model_state, self.directory / weights, metadata=meta)
        with atomic_write(self.directory / state_file, "wb") as f:
            torch.save(dict(state), f)
        best_info = dict(previous["best"]) if previous and previous.get("best") else None
        if best_state is not None and best is not None:
            name = f"{SUBDIR}/best-{int(best['epoch']):04d}.safetensors"
            atomic_save_safetensors(best_state, self.directory / name, metadata={**meta, "best_epoch": str(best["epoch"])})
            best_info = {**dict(best), "weights": name}
        info = {"format": FORMAT, "epoch": epoch, "weights": weights, "state": state_file, "best": best_info}
        atomic_write_text(self.pointer, json.dumps(info, indent=2))
        keep = {weights, state_file} | ({best_info["weights"]} if best_info else set())
        for path in sub.iterdir():
            rel = f"{SUBDIR}/{path.name}"
            if rel not in keep:
                path.unlink(missing_ok=True)  # older epochs, and temporary files of a killed write

    def load(self, info: Mapping[str, Any], *, map_location: Any = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(model state, training state)`` of the checkpoint ``info`` (from :meth:`latest`)."""
        weights = self._weights(info["weights"], device=str(map_location))
        path = self.directory / info["state"]
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... from torch.load
            # torch's own message suggests weights_only=False: never for a file in a run directory
            kind = type(exc).__name__
            raise CheckpointError(
                f"{path}: not a training state asczoo wrote ({kind} under a weights-only load: it holds "
                "objects other than tensors and plain values, or is damaged); asczoo never unpickles "
                "arbitrary objects. Move the run directory away, or start a new run with another --out"
            ) from None
        if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng", "history", "epoch"} <= set(state):
            raise CheckpointError(f"{path}: not a training state asczoo wrote (expected a mapping with optimizer, "
                                  "scheduler, rng, history and epoch); start a new run with another --out")
        if int(state["epoch"]) != int(info["epoch"]):
            raise CheckpointError(f"{path}: holds epoch {state['epoch']}, but {self.pointer} says {info['epoch']}; "
                                  "start a new run with another --out")
        return weights, state

    def load_best(self, info: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
        best = info.get("best")
        return self._weights(best["weights"]) if best else None

    def _weights(self, name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.directory / name
        try:
            return load_file(str(path), device=device)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc}); start a new run with "
                                  "another --out") from None

    def clean_temporary(self) -> None:
        """Remove temporary files a killed process left behind (never trusted, only untidy)."""
        if not self.writer:
            return
        for folder in (self.directory, self.directory / SUBDIR):
            if folder.is_dir():
                for path in folder.glob(f".*{TEMP_SUFFIX}"):
                    path.unlink(missing_ok=True)
