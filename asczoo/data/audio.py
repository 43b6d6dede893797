"""Reading and writing audio files: WAV and FLAC through ``soundfile`` (libsndfile).

torchaudio 2.11 has no I/O backend of its own, so files go through ``soundfile``, which is imported
inside the functions: machines that only run models (a GPU box without libsndfile) can import asczoo.
Waveforms are float32 tensors ``(channels, samples)`` in [-1, 1]. Every failure names the file.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import torch

#: file name endings read as audio
AUDIO_EXTENSIONS = (".wav", ".flac")


class AudioError(ValueError):
    """An audio file could not be read, or is not what it claims to be; the message names the file."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, plus whether its data is shorter than the header declares."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    #: frames the header declares; larger than ``frames`` when the file was cut short
    declared_frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def truncated(self) -> bool:
        return self.declared_frames > self.frames


def _soundfile():
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError("reading audio needs the soundfile package (pip install soundfile)") from exc
    return soundfile


def _wav_declared_frames(path: str, frames: int, channels: int, subtype: str) -> int:
    """Frames a RIFF/WAVE file's ``data`` chunk declares (libsndfile silently reads what is there).

    Returns ``frames`` when the header cannot be parsed (not a plain RIFF file): nothing to compare.
    """
    widths = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8, "PCM_U8": 1}
    width = widths.get(subtype)
    if width is None:
        return frames
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return frames
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return frames
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return frames
                return size // (width * channels)
            f.seek(size + (size & 1), os.SEEK_CUR)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file, with truncation detected for WAV files."""
    sf = _soundfile()
    path = str(path)
    try:
        with open_regular(path) as f:
            info = sf.info(f)
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from exc
    declared = info.frames
    if info.format == "WAV":
        declared = _wav_declared_frames(path, info.frames, info.channels, info.subtype)
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), int(declared),
                     str(info.format), str(info.subtype))


def open_regular(path: str | os.PathLike):
    """``path`` opened for binary reading, refusing anything but a regular file with :class:`AudioError`.

    The file is opened without blocking and checked on the open descriptor, so a FIFO named ``x.wav``
    (which a plain ``open`` would wait on forever), a device or a directory is never read as audio.
    Python opens the file, not libsndfile: names that are not valid UTF-8 work like any other.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise AudioError(f"{os.fsdecode(path)}: file not found") from None
    except OSError as exc:
        raise AudioError(f"{os.fsdecode(path)}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise AudioError(f"{os.fsdecode(path)}: {kind}, not an audio file; only regular files are read as audio")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A file's samples as float32 ``(channels, samples)`` and its sample rate.

    Raises :class:`AudioError` naming the file if it is missing, unreadable or cannot be decoded to the
    end (a FLAC stream that loses sync, for instance). A WAV file cut short is read as far as it goes;
    :func:`audio_info` tells whether that happened.
    """
    sf = _soundfile()
    path = str(path)
    try:
        with open_regular(path) as f:
            data, rate = sf.read(f, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from exc
    return torch.from_numpy(data.T.copy()), int(rate)


def write_audio(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, *, subtype: str = "PCM_16",
                fsync: bool = True) -> None:
    """Write ``(channels, samples)`` samples in [-1, 1] as WAV or FLAC (by extension), atomically
    (``fsync`` as in :func:`asczoo.atomic.atomic_write`)."""
    from asczoo.atomic import atomic_write

    sf = _soundfile()
    path = Path(path)
    data = torch.as_tensor(waveform).detach().cpu()
    if data.dim() == 1:
        data = data.unsqueeze(0)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write audio with extension {path.suffix!r}; use .wav or .flac")
    with atomic_write(path, "wb", fsync=fsync) as f:
        sf.write(f, data.T.numpy(), int(sample_rate), format=fmt, subtype=subtype)


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``(..., samples)`` with torchaudio's band-limited sinc interpolation (any device)."""
    if int(orig_rate) == int(new_rate):
        return waveform
    import torchaudio.functional as taf

    return taf.resample(waveform, int(orig_rate), int(new_rate))


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether the name ends in one of :data:`AUDIO_EXTENSIONS`."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    # libsndfile repeats the path ("Error opening '/x.wav': Format not recognised."); keep the reason.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text or type(exc).__name__
