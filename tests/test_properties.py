"""Property-based tests of the readers of untrusted input: metadata tables (meta.csv, fold files),
config.json and WAV headers.

Whatever the bytes, each reader gives a result or raises its documented error (a ``ValueError``
subclass that the CLI prints as one line: :class:`~asczoo.data.checks.DataError`,
:class:`~asczoo.hub.ModelFormatError` / :class:`~asczoo.recipes.schema.RecipeError`,
:class:`~asczoo.data.audio.AudioError`), never another exception, a hang (each example has a deadline) or an
allocation beyond the limits (what is returned is checked against them).
"""

from __future__ import annotations

import copy
import json
import struct
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from data_fixtures import TINY_FRONTEND, make_dcase_tree, one_thread  # noqa: F401 - fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asczoo.data import audio
from asczoo.recipes.schema import RecipeError
from asczoo.data.audio import AudioError
from asczoo.data.checks import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

#: modest: these run in the normal suite on a 2-core machine
PROPERTY = settings(max_examples=40, deadline=timedelta(seconds=20),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- metadata tables -----------------------------------------------------------------------------------------

#: table cells: file-like names, labels, separators and the odd control character
_cell = st.one_of(
    st.sampled_from(["filename", "scene_label", "file", "label", "identifier", "audio/a.wav", "audio/b.wav",
                     "../x.wav", "/etc/passwd", "airport", "bus", "", " ", "a.flac"]),
    st.text(max_size=12),
)
_line = st.lists(_cell, max_size=5) | st.text(max_size=40).map(lambda t: [t])
_table = st.tuples(st.sampled_from(["\t", ",", ";"]), st.lists(_line, max_size=8)).map(
    lambda sep_lines: "\n".join(sep_lines[0].join(cells) for cells in sep_lines[1]))


@PROPERTY
@given(text=_table, raw=st.binary(max_size=64), use_raw=st.booleans())
def test_labelled_table_reader(tmp_path, text, raw, use_raw):
    from asczoo.data.dataset_base import read_labelled_table

    path = tmp_path / "meta.csv"
    path.write_bytes(raw if use_raw else text.encode("utf-8"))
    try:
        rows = read_labelled_table(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    for file, label, group in rows:
        assert isinstance(file, str) and file
        assert label is None or isinstance(label, str)
        assert group is None or isinstance(group, str)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_dcase_tree(root, locations=2, segments=1, seconds=0.5)
    return root


@PROPERTY
@given(which=st.sampled_from(["meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv",
                              "evaluation_setup/fold1_test.csv"]),
       text=_table, split=st.sampled_from(["train", "evaluate", "test", "all"]))
def test_dataset_listing_from_hostile_tables(tree, which, text, split):
    from asczoo.data.datasets import create_dataset

    path = tree / which
    original = path.read_bytes()
    path.write_text(text, encoding="utf-8")
    try:
        try:
            ds = create_dataset("dcase2019-task1a", tree, split=split, frontend=TINY_FRONTEND, skip_bad=True)
        except (DataError, RecipeError):  # documented: bad listings are DataError
            return
        for clip in ds.clips:  # what survives the listing checks is a file that exists
            assert Path(clip.path).is_file()
            assert clip.label is None or -1 <= clip.label < len(ds.classes)  # -1: unlabelled (test)
    finally:
        path.write_bytes(original)


# -- config.json ---------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def saved_config(tmp_path_factory):
    from model_fixtures import tiny_model

    folder = tmp_path_factory.mktemp("model")
    tiny_model(seed=1).save_pretrained(folder)
    return folder, json.loads((folder / "config.json").read_text())


@PROPERTY
@given(document=_json, raw=st.binary(max_size=64), use_raw=st.booleans())
def test_read_config_of_any_document(tmp_path, document, raw, use_raw):
    from asczoo.hub import ModelFormatError, read_config

    path = tmp_path / "config.json"
    path.write_bytes(raw if use_raw else json.dumps(document).encode())
    try:
        config = read_config(path)
    except ModelFormatError as exc:
        assert "config.json" in str(exc)
        return
    assert isinstance(config, dict)


def _sections(config: dict) -> list[tuple[str, ...]]:
    """Paths of every value under the recipe's sections and the frontend."""
    paths = []
    for top in ("frontend", "recipe"):
        stack = [((top,), config[top])]
        while stack:
            path, node = stack.pop()
            if isinstance(node, dict):
                stack.extend(((*path, k), v) for k, v in node.items())
            else:
                paths.append(path)
    return sorted(paths)


@PROPERTY
@given(data=st.data(), value=_json)
def test_load_model_with_one_value_changed(saved_config, tmp_path, data, value):
    """Any value of the recipe or frontend replaced by any JSON value: a model or a clear error."""
    from asczoo.hub import ModelFormatError
    from asczoo.models.pretrained import load_pretrained

    folder, config = saved_config
    path = data.draw(st.sampled_from(_sections(config)))
    changed = copy.deepcopy(config)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (tmp_path / "config.json").write_text(json.dumps(changed))
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    try:
        model, _ = load_pretrained(tmp_path)
    except (ModelFormatError, RecipeError):
        return
    # accepted: then the weights fitted strictly, so nothing grew beyond the saved model
    assert sum(p.numel() for p in model.parameters()) <= 10**8


# -- WAV headers ---------------------------------------------------------------------------------------------

def _wav(fmt_tag: int, channels: int, rate: int, bits: int, declared: int, payload: bytes, align: int) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * max(channels, 1) * bits // 8 % 2**32, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared) + payload
    return b"RIFF" + struct.pack("<I", len(body) % 2**32) + body


@PROPERTY
@given(fmt_tag=st.sampled_from([0, 1, 3, 6, 7, 0xFFFE, 0x55]),
       channels=st.integers(0, 2**16 - 1) | st.sampled_from([1, 2]),
       rate=st.integers(0, 2**32 - 1) | st.sampled_from([1, 8000, 48000]),
       bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 65535]),
       declared=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=2048),
       align=st.integers(0, 2**16 - 1))
def test_audio_readers_on_any_wav_header(tmp_path, fmt_tag, channels, rate, bits, declared, payload, align):
    from asczoo.data.checks import check_audio

    path = tmp_path / "x.wav"
    path.write_bytes(_wav(fmt_tag, channels, rate, bits, declared, payload, align))
    try:
        info = audio.audio_info(path)
    except AudioError as exc:
        assert str(path) in str(exc)
    else:
        assert audio.MIN_SAMPLE_RATE <= info.sample_rate <= audio.MAX_SAMPLE_RATE
        assert 1 <= info.channels <= audio.MAX_CHANNELS
    try:
        waveform, sample_rate = audio.read_audio(path)
    except AudioError as exc:
        assert str(path) in str(exc)
    else:
        assert audio.MIN_SAMPLE_RATE <= sample_rate <= audio.MAX_SAMPLE_RATE
        assert waveform.numel() <= audio.MAX_SAMPLES
        assert bool(torch.isfinite(waveform).all())
        assert waveform.numel() == 0 or float(waveform.abs().max()) <= audio.MAX_AMPLITUDE
    problems, _, _ = check_audio(str(path), sample_rate=8000, clip_seconds=1.0, name="x.wav")
    assert all(p.path == "x.wav" for p in problems)


def test_read_config_of_deep_or_huge_documents(tmp_path, monkeypatch):
    from asczoo.hub import files as hub
    from asczoo.hub import ModelFormatError, read_config

    path = tmp_path / "config.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        read_config(path)
    monkeypatch.setattr(hub, "MAX_CONFIG_BYTES", 100)
    path.write_text(json.dumps({"name": "x" * 200}))
    with pytest.raises(ModelFormatError, match=r"config\.json is 212 bytes; a model's config is at most 100"):
        read_config(path)


def test_table_size_is_bounded_before_reading(tmp_path, monkeypatch):
    from asczoo.data import dataset_base

    path = tmp_path / "meta.csv"
    path.write_text("filename\tscene_label\n" + "audio/a.wav\tbus\n" * 10)
    monkeypatch.setattr(dataset_base, "MAX_TABLE_BYTES", 100)
    with pytest.raises(DataError, match=r"meta\.csv: 181 bytes; a metadata or setup table is at most 100"):
        dataset_base.read_labelled_table(path)
