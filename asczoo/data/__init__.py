"""Audio data for asczoo: what a dataset, frontend or augmentation plugin builds on (public API).

Dataset plugins: :class:`ClipDataset` (a labelled clip list served from audio or the feature cache,
with listing and audio checks), the setup-file readers :func:`read_table`,
:func:`read_labelled_table` (:func:`read_labelled_lines` with line numbers), :func:`read_setup_file`,
:func:`find_setup_file`, the location-keeping split :func:`location_split` with :func:`location_of`,
:func:`is_audio_file`, :func:`audio_info` (a file's header: rate, channels, frames; :class:`AudioError`
when it cannot be read), and the error types
:class:`DataError` (one message naming every bad input) and :class:`Problem` (one bad input).

Synthetic-layout writers of dataset plugins: :func:`write_audio` (atomic WAV/FLAC) and
:func:`asczoo.atomic.atomic_write_text`; :func:`normalise_listed` and :func:`place_listed` keep a listed
path inside the root, :func:`dataset_defaults` reads what a dataset plugin says about itself.

Frontend plugins: :func:`segment_starts`, and the sample rates audio may have (:data:`MIN_SAMPLE_RATE`
to :data:`MAX_SAMPLE_RATE`) (the paper's segment hop rule). Augmentation plugins:
:func:`check_batch` (the ``(B, N, 3, F, T)`` features / ``(B, K)`` targets contract).

The host's own entry points are here too: :func:`create_dataset`, :func:`extract` (the feature cache),
:func:`check_dataset`, :func:`create_frontend` and :func:`create_augmentation`. Everything else in this
package (``asczoo.data.feature_cache``, ``asczoo.data._lookup``, ...) may change without notice.
"""

from asczoo.data.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError, audio_info, is_audio_file, write_audio
from asczoo.data.augment import check_batch, create_augmentation
from asczoo.data.checks import DataError, Problem
from asczoo.data.dataset_check import check_dataset
from asczoo.data.dataset_base import (
    ClipDataset, find_setup_file, location_of, location_split, normalise_listed, place_listed,
    read_labelled_lines, read_labelled_table, read_setup_file, read_table,
)
from asczoo.data.datasets import SPLITS, create_dataset, dataset_defaults
from asczoo.data.feature_cache import extract
from asczoo.data.frontend import create_frontend, segment_starts
from asczoo.interfaces import Clip

__all__ = [
    "SPLITS", "Clip", "ClipDataset", "DataError", "Problem", "check_batch", "check_dataset", "create_augmentation",
    "create_dataset", "create_frontend", "extract", "find_setup_file", "is_audio_file", "location_of",
    "location_split", "read_labelled_lines", "read_labelled_table", "read_setup_file", "read_table",
    "segment_starts", "write_audio",
    "dataset_defaults", "normalise_listed", "place_listed", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE",
    "audio_info", "AudioError",
]
