"""Classifying recordings: :func:`predict` for one recording, :func:`timeline` for its windows one by
one (:func:`predict_timeline`: both from one pass), :func:`predict_files` for many.

Every recording goes through the model's own frontend (``model.frontend_config``), so any sample
rate and mono or stereo input works. A recording longer than the model's clip is cut into clip-long
windows: every ``hop_seconds`` (default one clip), with a last window ending at the end of the
recording; :func:`predict` averages the windows' class probabilities, :func:`timeline` gives one row
per window.

Files are read block by block (:class:`asczoo.data.audio.AudioStream`) and resampled to the
frontend's rate block by block (:class:`asczoo.dsp.StreamingResampler`, the same samples as resampling
the whole file), and windows go to the model a batch at a time (:func:`stream_windows`), so a
recording of hours is classified with memory that does not depend on its length.

:func:`predict_files` is the batch engine of ``asczoo predict``: audio is read ahead on a thread,
windows of several files share a batch, an unreadable file is reported by name and skipped, and the
results are written as a DCASE submission file (``filename<TAB>scene_label``) and a per-class scores
file (``filename<TAB>scene_label<TAB>class...``), each atomically.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

from asczoo import dsp
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
    #: start and end in seconds of each window, and its class probabilities ``(windows, classes)``
    starts: list[float] = dataclasses.field(default_factory=list)
    ends: list[float] = dataclasses.field(default_factory=list)
    window_probabilities: torch.Tensor | None = None


class WindowChunk(NamedTuple):
    """Consecutive windows of one recording: their start and end times in seconds and their waveforms
    ``(W, channels, samples)`` at ``sample_rate`` (the frontend's, or the file's for a frontend without
    ``clip_seconds``), ready for ``frontend.batch``."""

    starts: list[float]
    ends: list[float]
    waveforms: torch.Tensor
    sample_rate: int


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
    progress: bool | None = False,
) -> Prediction:
    """Classify one recording: a path to an audio file, or a waveform ``(channels, samples)`` /
    ``(samples,)`` (tensor or NumPy array) with its ``sample_rate``.

    Returns ``(label, probabilities)``: the most probable class and ``{class: probability}``,
    averaged over the windows of a long recording. A file is read block by block, so its length is
    not limited by memory; ``progress`` shows a bar of the position in the recording (``None``: on a
    terminal only). The model is put in eval mode.
    """
    rows = _window_rows(model, path_or_waveform, sample_rate, hop_seconds=hop_seconds, batch_size=batch_size,
                        progress=progress)
    return _prediction(model.classes, rows[2].mean(0))


class TimelineRow(NamedTuple):
    """One window of a recording: ``start`` and ``end`` in seconds, its ``labels`` (the most probable
    class; for a multi-label model every class at or above the threshold, most probable first, possibly
    none) and ``probabilities`` (``{class: probability}``, after smoothing when asked)."""

    start: float
    end: float
    labels: tuple[str, ...]
    probabilities: dict[str, float]


def timeline(
    model,
    path_or_waveform: str | os.PathLike | torch.Tensor | Any,
    sample_rate: int | None = None,
    *,
    hop_seconds: float | None = None,
    smooth: int = 1,
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: bool | None = False,
) -> list[TimelineRow]:
    """What the model hears window by window: one :class:`TimelineRow` per window of the recording
    (the windows :func:`predict` averages), in time order.

    ``smooth`` (odd) replaces each class's probability by its median over that many windows centred
    on the window (the first and last windows repeated at the edges), which removes one-window blips
    before the labels are chosen; 1 leaves the probabilities as they are. A multi-label model's labels
    are the classes at or above ``threshold`` (``asczoo predict --threshold``). Arguments otherwise as
    for :func:`predict`.
    """
    return predict_timeline(model, path_or_waveform, sample_rate, hop_seconds=hop_seconds, smooth=smooth,
                            threshold=threshold, batch_size=batch_size, progress=progress)[1]


def predict_timeline(
    model,
    path_or_waveform: str | os.PathLike | torch.Tensor | Any,
    sample_rate: int | None = None,
    *,
    hop_seconds: float | None = None,
    smooth: int = 1,
    threshold: float = 0.5,
    batch_size: int = 16,
    progress: bool | None = False,
) -> tuple[Prediction, list[TimelineRow]]:
    """:func:`predict` and :func:`timeline` of one recording from one pass over it: the averaged
    prediction (of the unsmoothed windows, as :func:`predict` gives) and the rows (``smooth`` applies to
    them only). What ``asczoo demo`` shows."""
    check_smooth(smooth)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"timeline: threshold must be between 0 and 1, got {threshold}")
    starts, ends, probabilities = _window_rows(model, path_or_waveform, sample_rate, hop_seconds=hop_seconds,
                                               batch_size=batch_size, progress=progress)
    multi_label = getattr(model, "task", "single-label") == "multi-label"
    rows = timeline_rows(model.classes, starts, ends, probabilities, smooth=smooth,
                         threshold=threshold if multi_label else None)
    return _prediction(model.classes, probabilities.mean(0)), rows


def check_smooth(smooth: int) -> int:
    """``smooth`` if it is a usable median width (a positive odd number of windows); else ValueError."""
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth (--smooth) must be an odd number of windows (1, 3, 5, ...) so that the median "
                         f"is centred on each window, got {smooth!r}")
    return smooth


def median_smooth(probabilities: torch.Tensor, width: int) -> torch.Tensor:
    """Each column of ``(windows, classes)`` replaced by its running median over ``width`` (odd) windows,
    centred, with the first and last rows repeated at the edges."""
    check_smooth(width)
    if width == 1 or probabilities.shape[0] < 2:
        return probabilities.clone()
    half = width // 2
    padded = torch.cat([probabilities[:1].expand(half, -1), probabilities, probabilities[-1:].expand(half, -1)])
    return padded.unfold(0, width, 1).median(dim=-1).values


def timeline_rows(classes: Sequence[str], starts: Sequence[float], ends: Sequence[float],
                  probabilities: torch.Tensor, *, smooth: int = 1, threshold: float | None = None) -> list[TimelineRow]:
    """Rows of a timeline from window times and probabilities ``(windows, classes)``: labels are the top
    class, or with ``threshold`` (multi-label) every class at or above it, after ``smooth``."""
    values = median_smooth(probabilities.float(), smooth).tolist()
    rows = []
    for start, end, row in zip(starts, ends, values):
        if threshold is None:
            labels = (classes[max(range(len(row)), key=row.__getitem__)],)
        else:
            labels = tuple(classes[i] for i in sorted(range(len(row)), key=lambda i: -row[i]) if row[i] >= threshold)
        rows.append(TimelineRow(float(start), float(end), labels, dict(zip(classes, row))))
    return rows


def write_timeline(rows: Sequence[TimelineRow], classes: Sequence[str], path: str | os.PathLike, *,
                   multi_label: bool = False) -> None:
    """The timeline as CSV, atomically: a header ``start,end,label,<class>...`` (``labels`` for a
    multi-label model, comma-joined within the quoted field), then one row per window, seconds to
    three decimals and probabilities to six."""
    import csv
    import io

    from asczoo.atomic import atomic_write_text

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["start", "end", "labels" if multi_label else "label", *classes])
    for row in rows:
        writer.writerow([f"{row.start:.3f}", f"{row.end:.3f}", ",".join(row.labels),
                         *(f"{row.probabilities[c]:.6f}" for c in classes)])
    atomic_write_text(path, out.getvalue())


def plot_timeline(rows: Sequence[TimelineRow], classes: Sequence[str], path: str | os.PathLike, *,
                  title: str | None = None) -> bool:
    """Draw the timeline as a PNG, atomically: each class's probability over time (a step per window),
    above them a band per class filled where the class is a window's label. Where windows overlap (a
    hop shorter than the clip) each is drawn from the midpoint between its centre and the previous
    window's centre to the midpoint with the next.

    Returns False, writing nothing, when matplotlib is not installed (``pip install matplotlib``).
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from asczoo.atomic import atomic_write

    colours = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    fig, (bands, lines) = plt.subplots(2, 1, sharex=True, figsize=(12, 2.5 + 0.25 * len(classes)),
                                       gridspec_kw={"height_ratios": [max(len(classes), 2) * 0.25, 3]})
    mids = [(r.start + r.end) / 2 for r in rows]
    edges = [rows[0].start] + [(a + b) / 2 for a, b in zip(mids, mids[1:])] + [rows[-1].end] if rows else [0.0]
    for k, name in enumerate(classes):
        colour = colours(k % colours.N)
        spans = [(edges[i], edges[i + 1] - edges[i]) for i, r in enumerate(rows) if name in r.labels]
        bands.broken_barh(spans, (len(classes) - 1 - k + 0.1, 0.8), color=colour)
        lines.stairs([r.probabilities[name] for r in rows], edges, color=colour, label=name, lw=1.2)
    bands.set_yticks([len(classes) - 1 - k + 0.5 for k in range(len(classes))], classes, fontsize=7)
    bands.set_ylim(0, len(classes))
    bands.set_title(title or "labels per window")
    lines.set_ylim(0, 1.02)
    lines.set_xlabel("time (s)")
    lines.set_ylabel("probability")
    lines.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    if rows:
        lines.set_xlim(rows[0].start, rows[-1].end)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True


def _window_rows(model, path_or_waveform, sample_rate, *, hop_seconds, batch_size, progress):
    """Window start and end times and probabilities ``(windows, classes)`` of one recording."""
    from tqdm.auto import tqdm

    from asczoo.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioStream, check_samples

    _check_run_arguments(batch_size, hop_seconds)
    model.eval()
    frontend = model_frontend(model)
    device = _device_of(model)
    starts: list[float] = []
    ends: list[float] = []
    parts = []
    disable = None if progress is None else not progress

    def classify(chunks: Iterable[WindowChunk], seconds: float, name: str) -> None:
        with tqdm(total=round(seconds, 1), desc=name, unit="s", disable=disable, leave=False) as bar:
            for chunk in chunks:
                features = frontend.batch(chunk.waveforms.to(device), chunk.sample_rate)
                parts.append(window_probabilities(model, features, batch_size=batch_size))
                starts.extend(chunk.starts)
                ends.extend(chunk.ends)
                bar.update(round(chunk.ends[-1], 1) - bar.n)

    if isinstance(path_or_waveform, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError("sample_rate applies to waveforms; a file's own sample rate is used")
        with AudioStream(path_or_waveform) as stream:
            chunks = stream_windows(stream.blocks(), stream.sample_rate, frontend, hop_seconds=hop_seconds,
                                    chunk=batch_size)
            classify(chunks, stream.seconds, Path(path_or_waveform).name)
    else:
        if sample_rate is None:
            raise ValueError("predict(waveform): pass the waveform's sample_rate")
        if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:  # as for files: resampling allocates
            raise ValueError(f"predict(waveform): sample_rate is {sample_rate}; expected {MIN_SAMPLE_RATE} to "
                             f"{MAX_SAMPLE_RATE} Hz")
        waveform = torch.as_tensor(path_or_waveform)
        if not waveform.is_floating_point():
            waveform = waveform.float()
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"expected a waveform (channels, samples) or (samples,), got shape "
                             f"{tuple(waveform.shape)}")
        check_samples("predict(waveform)", waveform)  # NaN in, NaN scores out: refuse, as for files
        chunks = stream_windows([waveform.cpu()], int(sample_rate), frontend, hop_seconds=hop_seconds,
                                chunk=batch_size)
        classify(chunks, waveform.shape[-1] / int(sample_rate), "predict")
    return starts, ends, torch.cat(parts)


def stream_windows(blocks: Iterable[torch.Tensor], sample_rate: int, frontend: Frontend, *,
                   hop_seconds: float | None = None, chunk: int = 16) -> Iterator[WindowChunk]:
    """The windows of a recording that arrives as ``(channels, samples)`` blocks at ``sample_rate``,
    as :class:`WindowChunk` s of at most ``chunk`` windows, holding at most a window and a block.

    The blocks are resampled to the frontend's ``sample_rate`` as they come (the samples resampling
    the whole recording would give) and cut there into windows of the frontend's ``clip_seconds``,
    one every ``hop_seconds`` (default: one clip), plus a last one ending at the end of the recording
    when the hop leaves audio over; a recording shorter than a clip is one window of all of it (the
    frontend pads it). Those are the windows ``frontend.windows`` cuts from a whole recording. A
    frontend without ``clip_seconds`` sees the whole recording as one window at its own rate.
    """
    if chunk < 1:
        raise ValueError(f"stream_windows: chunk must be at least 1, got {chunk}")
    clip_seconds = frontend.config.get("clip_seconds")
    if not clip_seconds:
        whole = torch.cat(list(blocks), dim=-1)
        if whole.shape[-1] == 0:
            raise ValueError("the recording has no samples")
        yield WindowChunk([0.0], [whole.shape[-1] / sample_rate], whole[None], int(sample_rate))
        return
    rate = int(frontend.sample_rate)
    length = int(round(float(clip_seconds) * rate))
    hop = length if hop_seconds is None else int(round(hop_seconds * rate))
    if hop <= 0:
        raise ValueError(f"hop_seconds must be positive, got {hop_seconds!r}")
    resampler = dsp.StreamingResampler(int(sample_rate), rate)
    buffer: torch.Tensor | None = None
    offset = next_start = last_end = total = 0  # in samples at ``rate``; ``offset``: buffer[..., 0]
    windows: list[torch.Tensor] = []
    starts: list[int] = []
    ends: list[int] = []

    def take() -> WindowChunk:
        out = WindowChunk([s / rate for s in starts], [e / rate for e in ends], torch.stack(windows), rate)
        windows.clear(), starts.clear(), ends.clear()
        return out

    resampled = itertools.chain((resampler.push(b) for b in blocks), (resampler.flush() for _ in (0,)))
    for block in resampled:
        if block.shape[-1] == 0:
            continue
        total += block.shape[-1]
        buffer = block if buffer is None else torch.cat([buffer, block], dim=-1)
        while next_start + length <= offset + buffer.shape[-1]:
            first = next_start - offset
            windows.append(buffer[:, first:first + length].clone())
            starts.append(next_start), ends.append(next_start + length)
            last_end, next_start = next_start + length, next_start + hop
            if len(windows) == chunk:
                yield take()
        # keep what the next window needs, and always the last clip (the window ending at the end)
        keep = max(offset, min(next_start, offset + buffer.shape[-1] - length))
        if keep > offset:
            buffer, offset = buffer[:, keep - offset:].clone(), keep
    if total == 0:
        raise ValueError("the recording has no samples")
    if total < length:
        windows.append(buffer.clone())
        starts.append(0), ends.append(total)
    elif last_end < total:
        first = total - length - offset
        windows.append(buffer[:, first:first + length].clone())
        starts.append(total - length), ends.append(total)
    if windows:
        yield take()


def _check_run_arguments(batch_size: int, hop_seconds: float | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if hop_seconds is not None and not (math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"hop_seconds (--hop) must be a positive number of seconds, got {hop_seconds}")


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
    block_frames: int | None = None,
) -> list[FileResult]:
    """Classify ``files`` (from :func:`collect_audio_files`) in order; errors are per file.

    Audio is read, resampled and cut into windows on a background thread, block by block
    (``block_frames`` frames per read, default :data:`asczoo.data.audio.BLOCK_FRAMES`), at most
    ``read_ahead`` chunks of :data:`READ_CHUNK` windows (or files) ahead of the model, so memory does
    not grow with a recording's length. The frontend and the model run on the model's device; windows of
    consecutive files are batched together (``batch_size`` windows per forward pass). ``progress``
    shows a tqdm bar of the audio done, in seconds (``None``: only on a terminal). ``on_error`` is
    called for each file that could not be read or featurised. Each result keeps its windows' times
    and probabilities (for :func:`timeline_rows`).
    """
    from tqdm.auto import tqdm

    from asczoo.data.audio import BLOCK_FRAMES

    _check_run_arguments(batch_size, hop_seconds)
    for classname in model.classes:
        _tsv_field(classname, "class name")
    model.eval()
    frontend = model_frontend(model)
    device = _device_of(model)
    results = [FileResult(path, name) for path, name in files]
    parts: list[list[torch.Tensor]] = [[] for _ in results]
    done = [0.0] * len(results)  # seconds of each file the bar has counted
    header = [0.0] * len(results)  # seconds of each file the bar's total holds
    pending: list[tuple[int, list[float], list[float], torch.Tensor]] = []  # features, not waveforms
    disable = None if progress is None else not progress
    bar = tqdm(total=0.0, desc="predict", unit="s", disable=disable, bar_format=_BAR)

    def advance(index: int, seconds: float) -> None:
        if seconds > done[index]:
            bar.update(round(seconds - done[index], 3))
            done[index] = seconds

    def fail(index: int, exc: BaseException) -> None:
        result = results[index]
        if result.error is not None:
            return
        message = str(exc)  # the CLI prints it after the file's name; drop a repeated path
        result.error = message.removeprefix(f"{result.path}: ") or type(exc).__name__
        parts[index].clear()
        bar.total -= header[index] - done[index]  # the rest of a file cut short is not coming
        header[index] = done[index]
        if on_error is not None:
            on_error(result)

    def flush() -> None:
        live = [item for item in pending if results[item[0]].error is None]
        pending.clear()
        if not live:
            return
        probabilities = window_probabilities(model, torch.cat([f for *_, f in live]), batch_size=batch_size)
        for (index, starts, ends, _), probs in zip(live, probabilities.split([f.shape[0] for *_, f in live])):
            parts[index].append(probs)
            results[index].starts += starts
            results[index].ends += ends
            advance(index, ends[-1])

    # Chunks of a few windows (a 10 s 48 kHz stereo window is 3.8 MB), so that what waits in the queue
    # is about one batch, not ``read_ahead`` batches; the batches themselves are formed here.
    reader = _ChunkReader([(r.path, tsv_problem(r.name)) for r in results], frontend, hop_seconds=hop_seconds,
                          chunk=min(batch_size, READ_CHUNK), block_frames=block_frames or BLOCK_FRAMES,
                          ahead=max(1, read_ahead))
    opened = 0
    try:
        for index, kind, value in reader:
            if kind == "open":
                opened += 1
                header[index] = round(value, 3)
                bar.total += header[index]
                bar.set_postfix_str(f"file {opened}/{len(results)}", refresh=False)
                bar.refresh()
            elif kind == "error":
                fail(index, value)
            elif kind == "chunk" and results[index].error is None:
                try:
                    features = frontend.batch(value.waveforms.to(device), value.sample_rate)
                except torch.OutOfMemoryError:
                    raise
                except (ValueError, TypeError, RuntimeError) as exc:  # e.g. three channels
                    fail(index, exc)
                    continue
                pending.append((index, value.starts, value.ends, features))
                if sum(f.shape[0] for *_, f in pending) >= batch_size:
                    flush()
            elif kind == "done" and results[index].error is None:
                bar.total += round(value, 3) - header[index]  # the data, where the header was wrong
                header[index] = round(value, 3)
        flush()
    finally:
        reader.close()
        bar.close()
    for result, probs in zip(results, parts):
        if result.error is None and probs:
            result.window_probabilities = torch.cat(probs)
            result.windows = result.window_probabilities.shape[0]
            result.prediction = _prediction(model.classes, result.window_probabilities.mean(0))
    return results


#: windows per chunk the reading thread hands over (``read_ahead`` chunks wait at most)
READ_CHUNK = 4

_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}{postfix}]"


class _Stopped(BaseException):
    """Raised in the reading thread when the consumer has gone (an error, Ctrl-C): stop reading."""


class _ChunkReader:
    """Reads files on a background thread: ``(index, kind, value)`` items in file order, at most
    ``ahead`` waiting: ``open`` (the header's duration in seconds), ``chunk`` (a :class:`WindowChunk`),
    ``done`` (seconds read) or ``error`` (the exception that stopped that file). A file whose name has
    a problem is not opened: its error is the problem. :meth:`close` stops the thread."""

    def __init__(self, files: Sequence[tuple[Path, str | None]], frontend: Frontend, *, hop_seconds: float | None,
                 chunk: int, block_frames: int, ahead: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._args = (files, frontend, hop_seconds, chunk, block_frames)
        self._thread = threading.Thread(target=self._run, name="asczoo-read", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self) -> None:
        from asczoo.data.audio import AudioStream

        files, frontend, hop_seconds, chunk, block_frames = self._args
        try:
            for index, (path, bad_name) in enumerate(files):
                try:
                    if bad_name:  # not read at all: its row could not be written
                        raise ValueError(f"file name {bad_name}; rename it")
                    with AudioStream(path) as stream:
                        self._put((index, "open", stream.seconds))
                        seconds = 0.0
                        for item in stream_windows(stream.blocks(block_frames), stream.sample_rate, frontend,
                                                   hop_seconds=hop_seconds, chunk=chunk):
                            self._put((index, "chunk", item))
                            seconds = item.ends[-1]
                    self._put((index, "done", seconds))
                except (ValueError, TypeError, OSError, RuntimeError) as exc:  # AudioError is a ValueError
                    self._put((index, "error", exc))
            self._put(None)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            try:
                self._put((None, "crash", exc))
            except _Stopped:
                return

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item[1] == "crash":
                raise item[2]
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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
