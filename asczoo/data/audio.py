"""Reading and writing audio files: WAV and FLAC through ``soundfile`` (libsndfile).

asczoo does not use torchaudio (see ``asczoo.dsp``), so files go through ``soundfile``, which is imported
inside the functions: machines that only run models (a GPU box without libsndfile) can import asczoo.
Waveforms are float32 tensors ``(channels, samples)`` in [-1, 1]. Every failure names the file.

Limits, checked before anything is allocated or decoded (a file's header can claim anything, and a
128 KB WAV claiming 1 Hz would be resampled to gigabytes):

* only regular files are opened (a FIFO or device named ``x.wav`` would block or never end);
* the sample rate is between :data:`MIN_SAMPLE_RATE` and :data:`MAX_SAMPLE_RATE` Hz, at most
  :data:`MAX_CHANNELS` channels, and no more frames than the file's bytes can hold (a PCM frame takes
  its sample width per channel, a compressed one at least 1 / :data:`MAX_FRAMES_PER_BYTE` byte): a
  header claiming hours in a few bytes is refused, a long recording is not;
* :func:`read_audio` reads a file whole, so it also refuses more than :data:`MAX_SAMPLES` samples
  (frames x channels, 2 GiB as float32); :class:`AudioStream` reads block by block, with memory
  independent of the length, and is what ``asczoo predict`` uses;
* samples are finite and within +-:data:`MAX_AMPLITUDE` (full scale is 1; float WAVs may exceed it a
  little, but 60 dB over full scale is a broken file whose log-mel features overflow to NaN).

Each violation is an :class:`AudioError` naming the file, the value and the limit; its ``kind``
(``not-a-file``, ``limits``, ``non-finite``, ``amplitude``, ``unreadable``) is what ``check-data``
reports.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from pathlib import Path

import torch

from asczoo import dsp

#: file name endings read as audio
AUDIO_EXTENSIONS = (".wav", ".flac")
#: sample rates outside this range are refused (telephone speech is 8 kHz; studio audio at most 384 kHz)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
#: more channels than this is not a recording asczoo reads (the frontend takes mono or stereo)
MAX_CHANNELS = 64
#: frames x channels :func:`read_audio` reads whole: 2**29 float32 samples are 2 GiB (about 93 min of
#: 48 kHz stereo); :class:`AudioStream` reads longer files block by block
MAX_SAMPLES = 2**29
#: frames a byte of a compressed file (FLAC) can hold at most: a FLAC frame holds at most 65,535
#: frames and takes at least 8 bytes; headers claiming more are refused
MAX_FRAMES_PER_BYTE = 2**13
#: containers whose data is stored uncompressed, at the subtype's sample width (FLAC's subtype names
#: its decoded width, not what it takes on disk)
PLAIN_FORMATS = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "RAW", "CAF")
#: bytes per sample of the uncompressed subtypes: a header may not claim more frames than the data holds
SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                "ULAW": 1, "ALAW": 1}
#: frames :class:`AudioStream` reads at a time by default (2 MiB of float32 stereo)
BLOCK_FRAMES = 2**18
#: largest absolute sample value accepted (full scale is 1.0; +60 dB over it is a broken file)
MAX_AMPLITUDE = 1e3


class AudioError(ValueError):
    """An audio file could not be read, or is not what it claims to be; the message names the file.

    ``kind`` says which: ``missing``, ``not-a-file``, ``unreadable``, ``limits`` (a header value beyond
    the module's limits), ``non-finite`` or ``amplitude`` (sample values).
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


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


def check_header(path: str, sample_rate: int, channels: int, frames: int, *, file_bytes: int | None = None,
                 format: str | None = None, subtype: str | None = None) -> None:
    """Raise :class:`AudioError` (kind ``limits``) if a header's values are beyond the module's limits.

    With ``file_bytes`` the frame count is also checked against what a file of that size can hold
    (:func:`most_frames`): an absurd header is refused before anything is decoded or allocated.
    """
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: the header's sample rate is {sample_rate} Hz; expected "
                         f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz", "limits")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: the header declares {channels} channels; expected 1 to {MAX_CHANNELS}", "limits")
    if file_bytes is not None:
        most = most_frames(file_bytes, channels, format, subtype)
        if frames > most:
            raise AudioError(f"{path}: the header declares {frames} frames x {channels} channels, more than its "
                             f"{file_bytes} bytes can hold (at most {most} frames of {format} {subtype}); expected "
                             "a header that matches the data", "limits")


def most_frames(file_bytes: int, channels: int, format: str | None, subtype: str | None) -> int:
    """The most frames a file of ``file_bytes`` bytes can hold: the data at the subtype's sample width
    (:data:`SAMPLE_BYTES`) in a :data:`PLAIN_FORMATS` container, else :data:`MAX_FRAMES_PER_BYTE` per byte."""
    width = SAMPLE_BYTES.get(subtype or "") if format in PLAIN_FORMATS else None
    if width is None:
        return file_bytes * MAX_FRAMES_PER_BYTE
    return file_bytes // (width * max(channels, 1))


def check_whole_read(path: str, channels: int, frames: int) -> None:
    """Raise :class:`AudioError` (kind ``limits``) if reading the file whole would exceed :data:`MAX_SAMPLES`."""
    if frames * channels > MAX_SAMPLES:
        raise AudioError(f"{path}: {frames} frames x {channels} channels = {frames * channels} samples; "
                         f"at most {MAX_SAMPLES} are read whole (asczoo predict reads any length block by block)",
                         "limits")


def check_samples(path: str, waveform: torch.Tensor) -> None:
    """Raise :class:`AudioError` if samples are NaN/Inf (``non-finite``) or beyond :data:`MAX_AMPLITUDE`."""
    if waveform.numel() == 0:
        return
    finite = torch.isfinite(waveform)
    if not bool(finite.all()):
        nan, inf = int(torch.isnan(waveform).sum()), int(torch.isinf(waveform).sum())
        raise AudioError(f"{path}: {nan} NaN and {inf} Inf samples; expected finite samples", "non-finite")
    peak = float(waveform.abs().max())
    if peak > MAX_AMPLITUDE:
        raise AudioError(f"{path}: peak sample value {peak:.3g}; expected at most {MAX_AMPLITUDE:g} in absolute "
                         "value (full scale is 1)", "amplitude")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file, with truncation detected for WAV files.

    Raises :class:`AudioError` for a missing path, a special file, an unreadable header or header
    values beyond the module's limits.
    """
    sf = _soundfile()
    path = str(path)
    try:
        with open_regular(path) as f:
            info = sf.info(f)
            size = os.fstat(f.fileno()).st_size
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from exc
    check_header(path, int(info.samplerate), int(info.channels), int(info.frames), file_bytes=size,
                 format=str(info.format), subtype=str(info.subtype))
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
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise AudioError(f"{os.fsdecode(path)}: file not found", "missing") from None
    except OSError as exc:
        raise AudioError(f"{os.fsdecode(path)}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise AudioError(f"{os.fsdecode(path)}: is {what}, not a regular audio file", "not-a-file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_audio(path: str | os.PathLike, *, check_values: bool = True) -> tuple[torch.Tensor, int]:
    """A file's samples as float32 ``(channels, samples)`` and its sample rate.

    Raises :class:`AudioError` naming the file if it is missing, not a regular file, unreadable, beyond
    the module's limits (checked on the header, before the samples are read), or cannot be decoded to
    the end (a FLAC stream that loses sync, for instance); with ``check_values`` (the default) also if a
    sample is NaN, Inf or beyond :data:`MAX_AMPLITUDE`. A WAV file cut short is read as far as it goes;
    :func:`audio_info` tells whether that happened.
    """
    sf = _soundfile()
    path = str(path)
    try:
        with open_regular(path) as raw, sf.SoundFile(raw) as f:
            check_header(path, int(f.samplerate), int(f.channels), int(f.frames),
                         file_bytes=os.fstat(raw.fileno()).st_size, format=str(f.format), subtype=str(f.subtype))
            check_whole_read(path, int(f.channels), int(f.frames))
            data = f.read(dtype="float32", always_2d=True)
            rate = int(f.samplerate)
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"{path}: unreadable audio ({_reason(exc)})") from exc
    waveform = torch.from_numpy(data.T.copy())
    if check_values:
        check_samples(path, waveform)
    return waveform, rate


class AudioStream:
    """An audio file read block by block, so that its length does not bound what can be read.

    ``with AudioStream(path) as stream:`` opens the file and checks its header (the limits above,
    the frame count against the file's size); ``stream.sample_rate``, ``stream.channels`` and
    ``stream.frames`` (what the header declares) are then known, and ``stream.blocks(frames)`` yields
    float32 ``(channels, samples)`` blocks of at most ``frames`` frames until the data ends. With
    ``check_values`` each block's samples are checked as :func:`read_audio` checks a whole file. Every
    failure is an :class:`AudioError` naming the file.
    """

    def __init__(self, path: str | os.PathLike, *, check_values: bool = True) -> None:
        self.path = str(path)
        self.check_values = check_values
        self._raw = self._file = None

    def __enter__(self) -> "AudioStream":
        sf = _soundfile()
        try:
            self._raw = open_regular(self.path)
            self._file = sf.SoundFile(self._raw)
            self.sample_rate, self.channels = int(self._file.samplerate), int(self._file.channels)
            self.frames = int(self._file.frames)
            check_header(self.path, self.sample_rate, self.channels, self.frames,
                         file_bytes=os.fstat(self._raw.fileno()).st_size, format=str(self._file.format),
                         subtype=str(self._file.subtype))
        except BaseException as exc:
            self.__exit__(None, None, None)
            if isinstance(exc, (AudioError, KeyboardInterrupt, SystemExit)):
                raise
            raise AudioError(f"{self.path}: unreadable audio ({_reason(exc)})") from exc
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in (self._file, self._raw):
            if handle is not None:
                handle.close()
        self._raw = self._file = None

    @property
    def seconds(self) -> float:
        """The header's duration in seconds."""
        return self.frames / self.sample_rate

    def blocks(self, frames: int = BLOCK_FRAMES):
        """Float32 ``(channels, samples)`` blocks of at most ``frames`` frames, in order, to the end of the data."""
        if frames < 1:
            raise ValueError(f"AudioStream.blocks: frames must be at least 1, got {frames}")
        while True:
            try:
                data = self._file.read(frames, dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
                raise AudioError(f"{self.path}: unreadable audio ({_reason(exc)})") from exc
            if data.shape[0] == 0:
                return
            block = torch.from_numpy(data.T.copy())
            if self.check_values:
                check_samples(self.path, block)
            yield block


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
    """Resample ``(..., samples)`` with band-limited sinc interpolation (torchaudio's, any device)."""
    return dsp.resample(waveform, int(orig_rate), int(new_rate))


def is_audio_file(path: str | os.PathLike) -> bool:
    """Whether the name ends in one of :data:`AUDIO_EXTENSIONS`."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    # libsndfile repeats the path ("Error opening '/x.wav': Format not recognised."); keep the reason.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    return text or type(exc).__name__
