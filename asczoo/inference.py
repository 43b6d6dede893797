"""Classifying recordings: :func:`predict` for one recording, :func:`predict_files` for many.

Every recording goes through the model's own frontend (``model.frontend_config``), so any sample
rate and mono or stereo input works. A recording longer than the model's clip is cut into clip-long
windows (the frontend's :meth:`windows` when it has one: every ``hop_seconds``, default one clip, with
a last window ending at the end of the recording); the windows' class probabilities are averaged.

:func:`predict_files` is the batch engine of ``asczoo predict``: audio is read ahead on a thread,
windows of several files share a batch, an unreadable file is reported by name and skipped, and the
results are written as a DCASE submission file (``filename<TAB>scene_label``) and a per-class scores
file (``filename<TAB>scene_label<TAB>class...``), each atomically.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

from asczoo.interfaces import Frontend


class Prediction(NamedTuple):
    """A recording's scene label and the class probabilities (``{class: probability}``)."""

    label: str
    probabilities: dict[str, float]


@dataclasses.dataclass
class FileResult:
    """One file's outcome in :func:`predict_files`: a prediction, or the error that stopped it."""

    path: Path
    name: str
    prediction: Prediction | None = None
    error: str | None = None
    windows: int = 0


def model_frontend(model) -> Frontend:
    """The frontend the model was trained with (rebuilt from ``model.frontend_config``)."""
    from asczoo.data.frontend import create_frontend

    return create_frontend(**model.frontend_config)


def clip_windows(frontend: Frontend, waveform: torch.Tensor, sample_rate: int,
                 hop_seconds: float | None = None) -> torch.Tensor:
    """Model inputs ``(W, N, C, F, T)`` of one recording ``(channels, samples)``: one per window.

    Uses the frontend's ``windows`` method when it has one. Otherwise windows of the frontend's
    ``clip_seconds`` are cut from the waveform here (same rule: every ``hop_seconds``, plus a last
    one ending at the end), and a frontend without ``clip_seconds`` sees the whole recording once.
    """
    x = torch.as_tensor(waveform)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"expected a waveform (channels, samples) or (samples,), got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError("the recording has no samples")
    windows = getattr(frontend, "windows", None)
    if callable(windows):
        return windows(x, sample_rate, hop_seconds=hop_seconds)
    clip_seconds = frontend.config.get("clip_seconds")
    if not clip_seconds:
        return frontend(x, sample_rate).unsqueeze(0)
    length = int(round(clip_seconds * sample_rate))
    hop = length if hop_seconds is None else int(round(hop_seconds * sample_rate))
    if hop <= 0:
        raise ValueError(f"hop_seconds must be positive, got {hop_seconds!r}")
    total = x.shape[-1]
    starts = list(range(0, max(total - length, 0) + 1, hop))
    if total > length and starts[-1] + length < total:
        starts.append(total - length)
    return frontend.batch(torch.stack([x[:, s:s + length] for s in starts]) if total >= length else x[None],
                          sample_rate)


@torch.no_grad()
def window_probabilities(model, windows: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """Class probabilities ``(W, classes)`` of model inputs ``(W, N, C, F, T)``, ``batch_size`` at a time:
    a softmax over the classes, or one sigmoid per class for a multi-label model (``model.activation``)."""
    device = _device_of(model)
    sigmoid = getattr(model, "activation", "softmax") == "sigmoid"
    out = []
    for start in range(0, windows.shape[0], batch_size):
        logits = model(windows[start:start + batch_size].to(device, non_blocking=True))
        out.append((torch.sigmoid(logits.float()) if sigmoid else torch.softmax(logits.float(), dim=-1)).cpu())
    return torch.cat(out)


def predict(
    model,
    path_or_waveform: str | os.PathLike | torch.Tensor | Any,
    sample_rate: int | None = None,
    *,
    hop_seconds: float | None = None,
    batch_size: int = 16,
) -> Prediction:
    """Classify one recording: a path to an audio file, or a waveform ``(channels, samples)`` /
    ``(samples,)`` (tensor or NumPy array) with its ``sample_rate``.

    Returns ``(label, probabilities)``: the most probable class and ``{class: probability}``,
    averaged over the windows of a long recording. The model is put in eval mode.
    """
    from asczoo.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_samples, read_audio

    if isinstance(path_or_waveform, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError("sample_rate applies to waveforms; a file's own sample rate is used")
        waveform, sample_rate = read_audio(path_or_waveform)
    else:
        if sample_rate is None:
            raise ValueError("predict(waveform): pass the waveform's sample_rate")
        if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:  # as for files: resampling allocates
            raise ValueError(f"predict(waveform): sample_rate is {sample_rate}; expected {MIN_SAMPLE_RATE} to "
                             f"{MAX_SAMPLE_RATE} Hz")
        waveform = torch.as_tensor(path_or_waveform)
        if not waveform.is_floating_point():
            waveform = waveform.float()
        check_samples("predict(waveform)", waveform)  # NaN in, NaN scores out: refuse, as for files
    model.eval()
    windows = clip_windows(model_frontend(model), waveform, int(sample_rate), hop_seconds)
    return _prediction(model.classes, window_probabilities(model, windows, batch_size=batch_size).mean(0))


def _prediction(classes: Sequence[str], probabilities: torch.Tensor) -> Prediction:
    values = probabilities.tolist()
    best = max(range(len(values)), key=values.__getitem__)
    return Prediction(classes[best], dict(zip(classes, values)))


def _device_of(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


# -- many files --------------------------------------------------------------------------------------


def collect_audio_files(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """Audio files to classify, each with the name written to the output.

    A file is named as given; a folder contributes its audio files (searched recursively, sorted),
    named relative to the folder's parent, so ``dataset/audio`` gives DCASE-style names
    ``audio/airport-....wav``; a DCASE setup table (``evaluation_setup/fold1_test.csv``: tab-separated,
    a ``filename`` column) contributes the files it lists, in its order and named as listed, found
    relative to the dataset folder (the one holding ``evaluation_setup/``). A path that does not exist
    is kept (it is reported as unreadable).
    """
    from asczoo.data.audio import is_audio_file

    files: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix == ".csv" and path.is_file():
            files += _listed_files(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_file(p))
            if not found:
                raise FileNotFoundError(f"{path}: no audio files (.wav, .flac) in this folder")
            base = path.resolve().parent
            files += [(p, p.resolve().relative_to(base).as_posix()) for p in found]
        else:
            files.append((path, Path(raw).as_posix()))
    return files


def _listed_files(table: Path) -> list[tuple[Path, str]]:
    """The files a DCASE setup table lists (``filename`` column), in its order, named as listed."""
    import csv

    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or "filename" not in rows[0]:
        raise ValueError(f"{table}: expected a tab-separated DCASE setup table with a 'filename' column, "
                         f"got header {rows[0] if rows else '(empty file)'}")
    column = rows[0].index("filename")
    root = table.parent.parent if table.parent.name == "evaluation_setup" else table.parent
    return [(root / row[column], row[column]) for row in rows[1:] if len(row) > column and row[column]]


def predict_files(
    model,
    files: Sequence[tuple[Path, str]],
    *,
    batch_size: int = 16,
    hop_seconds: float | None = None,
    progress: bool | None = None,
    read_ahead: int = 4,
    on_error: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Classify ``files`` (from :func:`collect_audio_files`) in order; errors are per file.

    Audio is read on a background thread (``read_ahead`` files ahead); the frontend and the model run
    on the model's device; windows of consecutive files are batched together (``batch_size`` windows
    per forward pass). ``progress`` shows a tqdm bar (``None``: only on a terminal). ``on_error`` is
    called for each file that could not be read or featurised.
    """
    from tqdm.auto import tqdm

    from asczoo.data.audio import read_audio

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if hop_seconds is not None and not (math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"hop_seconds (--hop) must be a positive number of seconds, got {hop_seconds}")
    for classname in model.classes:
        _tsv_field(classname, "class name")
    model.eval()
    frontend = model_frontend(model)
    device = _device_of(model)
    results = [FileResult(path, name) for path, name in files]
    pending: list[tuple[FileResult, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        probabilities = window_probabilities(model, torch.cat([w for _, w in pending]), batch_size=batch_size)
        for (result, windows), probs in zip(pending, probabilities.split([w.shape[0] for _, w in pending])):
            result.prediction = _prediction(model.classes, probs.mean(0))
            result.windows = windows.shape[0]
        pending.clear()

    disable = None if progress is None else not progress
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="asczoo-read") as pool, \
            tqdm(total=len(results), desc="predict", unit="file", disable=disable) as bar:
        for result, audio in zip(results, _read_ahead(pool, read_audio, [r.path for r in results], read_ahead)):
            try:
                bad_name = tsv_problem(result.name)
                if bad_name:  # not read at all: its row could not be written
                    raise ValueError(f"file name {bad_name}; rename it")
                waveform, rate = audio.result()
                windows = clip_windows(frontend, waveform.to(device), rate, hop_seconds)
            except torch.OutOfMemoryError:
                raise
            except (ValueError, TypeError, OSError, RuntimeError) as exc:  # AudioError is a ValueError
                message = str(exc)  # the CLI prints it after the file's name; drop a repeated path
                result.error = message.removeprefix(f"{result.path}: ") or type(exc).__name__
                if on_error is not None:
                    on_error(result)
                bar.update(1)
                continue
            pending.append((result, windows))
            if sum(w.shape[0] for _, w in pending) >= batch_size:
                flush()
            bar.update(1)
        flush()
    return results


def _read_ahead(pool, read, paths: Sequence[Path], ahead: int) -> Iterator[concurrent.futures.Future]:
    """Futures of ``read(path)`` in order, at most ``ahead`` submitted beyond the one consumed."""
    futures: collections.deque[concurrent.futures.Future] = collections.deque()
    for path in paths:
        futures.append(pool.submit(read, path))
        if len(futures) > ahead:
            yield futures.popleft()
    while futures:
        yield futures.popleft()


#: characters a TSV field cannot hold: they would split the row or the line
TSV_UNSAFE = ("\t", "\n", "\r")


def tsv_problem(value: str) -> str | None:
    """Why ``value`` cannot be a field of a submission or scores TSV (a tab or line break), or None."""
    for char, name in (("\t", "a tab"), ("\n", "a line break"), ("\r", "a carriage return")):
        if char in value:
            return f"{value!r} holds {name}, which a tab-separated file cannot hold"
    return None


def _tsv_field(value: str, what: str) -> str:
    problem = tsv_problem(value)
    if problem:
        raise ValueError(f"{what} {problem}; rename it")
    return value


def _tsv_bytes(text: str) -> bytes:
    """UTF-8, with file names that are not valid UTF-8 written back as the bytes they are on disk."""
    return text.encode("utf-8", "surrogateescape")


def write_submission(results: Sequence[FileResult], path: str | os.PathLike) -> None:
    """The DCASE submission file: ``filename<TAB>scene_label`` with a header, predicted files only."""
    from asczoo.atomic import atomic_write

    text = format_submission(results)
    with atomic_write(path, "wb") as f:
        f.write(_tsv_bytes(text))


def format_submission(results: Sequence[FileResult]) -> str:
    """The submission's text; a file or class name holding a tab or line break is refused (ValueError)."""
    lines = ["filename\tscene_label"]
    lines += [f"{_tsv_field(r.name, 'file name')}\t{_tsv_field(r.prediction.label, 'class name')}"
              for r in results if r.prediction is not None]
    return "\n".join(lines) + "\n"


def write_scores(results: Sequence[FileResult], classes: Sequence[str], path: str | os.PathLike) -> None:
    """Per-class probabilities: ``filename<TAB>scene_label<TAB>class_1 ...`` with a header."""
    from asczoo.atomic import atomic_write

    lines = ["\t".join(["filename", "scene_label", *(_tsv_field(c, "class name") for c in classes)])]
    for r in results:
        if r.prediction is None:
            continue
        scores = (f"{r.prediction.probabilities[c]:.6f}" for c in classes)
        lines.append("\t".join([_tsv_field(r.name, "file name"), r.prediction.label, *scores]))
    with atomic_write(path, "wb") as f:
        f.write(_tsv_bytes("\n".join(lines) + "\n"))


def labels_above(prediction: Prediction, threshold: float) -> list[tuple[str, float]]:
    """A multi-label prediction's classes with probability at least ``threshold``, most probable first."""
    ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])
    return [(c, p) for c, p in ranked if p >= threshold]


def format_multi_label(results: Sequence[FileResult], threshold: float) -> str:
    """``filename<TAB>label,label,...`` (every label at or above ``threshold``) with a header."""
    lines = ["filename\tlabels"]
    for r in results:
        if r.prediction is not None:
            lines.append(f"{_tsv_field(r.name, 'file name')}\t"
                         + ",".join(c for c, _ in labels_above(r.prediction, threshold)))
    return "\n".join(lines) + "\n"


def write_dcase_output(results: Sequence[FileResult], classes: Sequence[str], path: str | os.PathLike) -> None:
    """DCASE 2024/2025 Task 1 system output (``output.csv``): tab-separated, a header row
    ``filename scene_label <class> ...`` (the classes in the model's order), then per file its name, the
    predicted scene and one probability per class; files that could not be read are left out.

    File names are written as the DCASE 2025 inference template's ``evaluate_submission.py`` writes
    them: as the evaluation set's ``fold1_test.csv`` lists them (``audio/0.wav``), which is what
    ``asczoo predict MODEL EVAL/evaluation_setup/fold1_test.csv`` names them, in the table's order
    (``dcase_file_name`` gives the DCASE 2024 baseline's form, without ``audio/``)."""
    write_scores(results, classes, path)


def dcase_file_name(name: str) -> str:
    """``name`` without a leading ``audio/`` folder, the form DCASE Task 1 system outputs use."""
    return name[len("audio/"):] if name.startswith("audio/") else name


def default_scores_path(output: str | os.PathLike) -> Path:
    """``submission.tsv`` -> ``submission.scores.tsv`` (next to the submission file)."""
    output = Path(output)
    suffix = output.suffix or ".tsv"
    return output.with_name(f"{output.stem if output.suffix else output.name}.scores{suffix}")
