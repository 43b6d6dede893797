"""Bad input: every case of ``check-data`` gets its named report; extraction applies the same policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asczoo.cli import main as cli
from asczoo.data_checks import ERROR, WARNING, DataError, check_audio, check_dataset
from asczoo.feature_cache import extract
from data_fixtures import TINY_FRONTEND, make_dcase_tree, one_thread, write_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
sf = pytest.importorskip("soundfile")

NAME = "dcase2019-task1a"
FRONTEND_ARGS = [arg for key, value in TINY_FRONTEND.items() if key != "plugin"
                 for arg in ("--frontend", f"{key}={value}")]

# file -> (kind, severity) that its damage must produce
AUDIO_CASES = {
    "audio/airport-barcelona-0-0-a.wav": ("truncated", ERROR),
    "audio/airport-barcelona-0-1-a.wav": ("unreadable", ERROR),
    "audio/airport-helsinki-1-0-a.wav": ("sample-rate", WARNING),
    "audio/airport-helsinki-1-1-a.wav": ("channels", WARNING),  # mono
    "audio/bus-barcelona-0-0-a.wav": ("channels", ERROR),  # four channels
    "audio/bus-barcelona-0-1-a.wav": ("too-short", WARNING),
    "audio/bus-helsinki-1-0-a.wav": ("too-short", ERROR),  # no samples at all
    "audio/bus-helsinki-1-1-a.wav": ("silence", WARNING),
    "audio/park-barcelona-0-0-a.wav": ("non-finite", ERROR),  # NaN
    "audio/park-barcelona-0-1-a.wav": ("non-finite", ERROR),  # Inf
}


def damage(root):
    """Break the fixture in every way ``check-data`` knows."""
    a = root / "audio"
    data = (a / "airport-barcelona-0-0-a.wav").read_bytes()
    (a / "airport-barcelona-0-0-a.wav").write_bytes(data[: len(data) // 2])
    (a / "airport-barcelona-0-1-a.wav").write_bytes(b"\x00\x01garbage" * 50)
    write_clip(a / "airport-helsinki-1-0-a.wav", 1, rate=16000)
    write_clip(a / "airport-helsinki-1-1-a.wav", 2, channels=1)
    write_clip(a / "bus-barcelona-0-0-a.wav", 3, channels=4)
    write_clip(a / "bus-barcelona-0-1-a.wav", 4, seconds=0.3)
    sf.write(str(a / "bus-helsinki-1-0-a.wav"), np.zeros((0, 2), np.float32), 8000, subtype="PCM_16")
    sf.write(str(a / "bus-helsinki-1-1-a.wav"), np.zeros((8000, 2), np.float32), 8000, subtype="PCM_16")
    nan = np.full((8000, 2), 0.1, np.float32)
    nan[100, 0] = np.nan
    sf.write(str(a / "park-barcelona-0-0-a.wav"), nan, 8000, subtype="FLOAT")
    inf = np.full((8000, 2), 0.1, np.float32)
    inf[5:7, 1] = np.inf
    sf.write(str(a / "park-barcelona-0-1-a.wav"), inf, 8000, subtype="FLOAT")
    # listing problems
    (a / "park-helsinki-1-0-a.wav").unlink()  # listed, missing
    setup = root / "evaluation_setup" / "fold1_train.csv"
    lines = setup.read_text().splitlines()
    lines = [line.replace("park-helsinki-1-1-a.wav\tpark", "park-helsinki-1-1-a.wav\tlobby") for line in lines]
    lines.append(lines[3])  # a duplicate entry (airport-helsinki-1-0)
    lines.append("audio/park-lisbon-2-0-a.wav\tpark")  # also in the evaluation list
    setup.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def broken(tmp_path):
    root = tmp_path / "data"
    make_dcase_tree(root)
    damage(root)
    return root


def test_every_bad_input_gets_its_named_report(broken):
    report = check_dataset(NAME, broken, frontend=TINY_FRONTEND, progress=False)
    found = {(p.path, p.kind, p.severity) for p in report.problems}
    for file, (kind, severity) in AUDIO_CASES.items():
        assert (file, kind, severity) in found, (file, kind)
    assert ("audio/park-helsinki-1-0-a.wav", "missing", ERROR) in found
    assert ("audio/park-helsinki-1-1-a.wav", "unknown-label", ERROR) in found
    assert ("audio/airport-helsinki-1-0-a.wav", "duplicate", ERROR) in found
    assert ("audio/park-lisbon-2-0-a.wav", "split-overlap", WARNING) in found
    messages = {(p.path, p.kind): p.message for p in report.problems}
    assert "16000 Hz; expected 8000 Hz" in messages[("audio/airport-helsinki-1-0-a.wav", "sample-rate")]
    assert "4 channels" in messages[("audio/bus-barcelona-0-0-a.wav", "channels")]
    assert "1 NaN" in messages[("audio/park-barcelona-0-0-a.wav", "non-finite")]
    assert "2 Inf" in messages[("audio/park-barcelona-0-1-a.wav", "non-finite")]
    assert "declares 8000 frames" in messages[("audio/airport-barcelona-0-0-a.wav", "truncated")]
    assert "'lobby'" in messages[("audio/park-helsinki-1-1-a.wav", "unknown-label")]
    # nothing is reported about the healthy files
    healthy = {"audio/park-lisbon-2-1-a.wav", "audio/bus-lisbon-2-0-a.wav", "audio/airport-lisbon-2-1-a.wav"}
    assert not healthy & {p.path for p in report.problems}


def test_check_data_command_exit_status_and_json(broken, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    assert cli(["check-data", str(broken), "--no-progress", "--json", str(out_json), *FRONTEND_ARGS]) == 1
    captured = capsys.readouterr()
    assert "ERROR   audio/airport-barcelona-0-1-a.wav: unreadable" in captured.out
    assert "WARNING audio/bus-helsinki-1-1-a.wav: silence" in captured.out
    assert "would break training" in captured.err
    report = json.loads(out_json.read_text())
    assert {p["kind"] for p in report["problems"]} >= {"truncated", "unreadable", "missing", "duplicate"}


def test_clean_data_passes_and_warnings_fail_only_with_strict(tmp_path, capsys):
    root = tmp_path / "data"
    make_dcase_tree(root)
    assert cli(["check-data", str(root), "--no-progress", *FRONTEND_ARGS]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    write_clip(root / "audio/bus-lisbon-2-0-a.wav", 5, channels=1)
    assert cli(["check-data", str(root), "--no-progress", *FRONTEND_ARGS]) == 0
    assert cli(["check-data", str(root), "--no-progress", "--strict", *FRONTEND_ARGS]) == 1


def test_missing_setup_file_is_reported(tmp_path, capsys):
    root = tmp_path / "data"
    make_dcase_tree(root)
    (root / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    assert [p.kind for p in report.errors] == ["missing-setup"]
    assert "fold1_evaluate" in report.errors[0].path


def test_extraction_applies_the_same_checks(broken, tmp_path):
    report = check_dataset(NAME, broken, frontend=TINY_FRONTEND, progress=False)
    bad_files = {p.path for p in report.errors}
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        extract(NAME, broken, frontend=TINY_FRONTEND, cache_dir=cache, progress=False)
    assert "--skip-bad" in str(err.value)
    assert not list(cache.glob("*/*.manifest.json"))  # no half-finished cache
    info = extract(NAME, broken, frontend=TINY_FRONTEND, cache_dir=cache, skip_bad=True, progress=False)
    assert {p.path for p in info.skipped} == bad_files
    assert {p.path for p in info.warnings} >= {f for f, (_, s) in AUDIO_CASES.items() if s == WARNING}


def test_check_audio_returns_the_samples_it_read(tmp_path):
    write_clip(tmp_path / "ok.wav", 0)
    problems, waveform, rate = check_audio(str(tmp_path / "ok.wav"), sample_rate=8000, clip_seconds=1.0)
    assert problems == [] and waveform.shape == (2, 8000) and rate == 8000
    problems, waveform, _ = check_audio(str(tmp_path / "nope.wav"), sample_rate=8000, clip_seconds=1.0, name="x")
    assert [(p.path, p.kind) for p in problems] == [("x", "missing")] and waveform is None


def test_datasets_without_a_cache_apply_the_same_policy(broken):
    import asczoo

    strict = asczoo.create_dataset(NAME, broken, split="evaluate", frontend=TINY_FRONTEND)  # listing is fine
    assert len(strict) == 6
    fine = asczoo.create_dataset(NAME, broken, split="train", frontend=TINY_FRONTEND, skip_bad=True)
    audio_errors = {f for f, (_, severity) in AUDIO_CASES.items() if severity == ERROR}
    assert not audio_errors & set(fine.files)  # read once, bad files left out
    assert audio_errors <= {p.path for p in fine.skipped}
    assert "audio/airport-helsinki-1-1-a.wav" in fine.files  # mono is only a warning
    features, _ = fine[fine.files.index("audio/airport-helsinki-1-0-a.wav")]  # 16 kHz: resampled
    assert features.shape == (4, 3, 32, 24)
    damaged = broken / "audio" / "bus-lisbon-2-0-a.wav"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(DataError, match="bus-lisbon-2-0-a.wav: truncated"):
        strict[strict.files.index("audio/bus-lisbon-2-0-a.wav")]


# -- issue 14: paths outside the root, fold-file problems ---------------------------------------------------

def _rewrite(path, transform):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


@pytest.mark.parametrize("planted", ["../../outside.wav", "/etc/passwd", "/proc/self/environ", "audio/../../x.wav"])
def test_rows_leaving_the_root_are_refused_naming_the_file_and_line(tmp_path, planted):
    import asczoo

    root = tmp_path / "data"
    make_dcase_tree(root)
    write_clip(tmp_path / "outside.wav", 99)  # a valid WAV outside the root must not be featurised
    _rewrite(root / "evaluation_setup" / "fold1_train.csv", lambda ls: [*ls, f"{planted}\tbus"])
    with pytest.raises(DataError, match=r"fold1_train\.csv, line \d+: the path leaves the dataset root") as info:
        asczoo.create_dataset(NAME, root, frontend=TINY_FRONTEND)
    assert info.value.problems[0].path == planted and info.value.problems[0].kind == "outside-root"
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    assert "outside-root" in {p.kind for p in report.errors}
    assert not any(planted in str(p) and p.kind not in ("outside-root",) for p in report.problems)


def test_fold_file_problems_are_reported_by_check_data(tmp_path):
    root = tmp_path / "data"
    listed = make_dcase_tree(root)
    setup = root / "evaluation_setup"
    first = None

    def broken_train(lines):
        nonlocal first
        first = lines[1].split("\t")[0]
        other = "bus" if not lines[1].endswith("\tbus") else "airport"
        return [lines[0], f"{first}\t{other}",  # contradicts meta.csv
                f"./{lines[2].split(chr(9))[0]}\t{lines[2].split(chr(9))[1]}",  # same file in two spellings
                lines[2].split("\t")[0].replace("/", "//") + "\t" + lines[2].split("\t")[1], *lines[3:]]

    _rewrite(setup / "fold1_train.csv", broken_train)
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    kinds = {p.kind for p in report.errors}
    assert "label-conflict" in kinds and any(p.path == first for p in report.errors)
    del listed

    # one file listed under two spellings is one file: a duplicate
    _rewrite(setup / "fold1_train.csv", lambda ls: [ls[0], *ls[2:]])  # drop the contradicting row
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    assert [p.kind for p in report.errors] == ["duplicate"]

    # a training list without a label column
    _rewrite(setup / "fold1_train.csv", lambda ls: ["filename"] + [line.split("\t")[0] for line in ls[1:]])
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    assert "no-label" in {p.kind for p in report.errors}

    # an empty training list is a missing setup
    (setup / "fold1_train.csv").write_text("")
    report = check_dataset(NAME, root, frontend=TINY_FRONTEND, progress=False)
    assert "missing-setup" in {p.kind for p in report.errors}
    assert any("empty" in p.message for p in report.errors)
