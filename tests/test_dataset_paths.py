"""Issue 24 items 1 and 2: every dataset plugin's listed paths stay inside the root, and a duplicate row
is refused alike, because both rules live in the shared base (:class:`asczoo.data.ClipDataset`).

The fixtures are the published layouts of tests/test_field_datasets.py and tests/data_fixtures.py, each
written once per module; the hostile rows are appended to a copy of one metadata file per example.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from data_fixtures import make_dcase_tree, one_thread, write_clip  # noqa: F401 - one_thread is a fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_field_datasets import esc50, esc50_rows, fsd50k, tau2020, tau2022, text

import asczoo
from asczoo import plugins
from asczoo.data import DataError, normalise_listed

pytestmark = pytest.mark.usefixtures("one_thread")

US8K_HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"


def _us8k(root: Path) -> Path:
    text(root / "metadata" / "UrbanSound8K.csv", US8K_HEADER + "100032-3-0-0.wav,100032,0.0,0.5,1,1,3,dog_bark\n"
         "100263-2-0-1.wav,100263,0.0,0.5,1,2,2,children_playing\n")
    write_clip(root / "audio" / "fold1" / "100032-3-0-0.wav", 0, seconds=0.25, channels=1)
    write_clip(root / "audio" / "fold2" / "100263-2-0-1.wav", 1, seconds=0.25, channels=1)
    return root


def _folder(root: Path) -> Path:
    for i, label in enumerate(("bus", "park")):
        write_clip(root / f"{label}-{i}.wav", i, seconds=0.25)
    text(root / "labels.csv", "file,label\nbus-0.wav,bus\npark-1.wav,park\n")
    return root


#: per registered dataset: (write the fixture, metadata file a hostile row goes into, that row for a
#: listed value P, the path the reader makes of P, extra files that must list P too)
LAYOUTS = {
    "dcase2019-task1a": (make_dcase_tree, "evaluation_setup/fold1_train.csv", "{p}\tbus", "{p}", ()),
    "dcase2018-task1a": (lambda r: make_dcase_tree(r, year=2018), "evaluation_setup/fold1_train.txt", "{p}\tbus",
                         "{p}", ()),
    "folder": (_folder, "labels.csv", "{p},bus", "{p}", ()),
    "tau2020-mobile": (tau2020, "evaluation_setup/fold1_train.csv", "{p}\tairport", "{p}",
                       (("meta.csv", "{p}\tairport\tlisbon-1000\ta"),)),
    "tau2022-mobile": (tau2022, "split_setup/split100.csv", "{p}\tairport", "{p}",
                       (("meta.csv", "{p}\tairport\tlisbon-1000\ta"),)),
    "esc50": (lambda r: esc50(r, esc50_rows()), "meta/esc50.csv", "{p},1,0,dog,True,999999,A", "audio/{p}", ()),
    "urbansound8k": (_us8k, "metadata/UrbanSound8K.csv", "{p},999,0.0,0.5,1,1,3,dog_bark", "audio/fold1/{p}", ()),
    "fsd50k": (fsd50k, "FSD50K.ground_truth/dev.csv", "{p},Bark,/m/05tny_,train", "FSD50K.dev_audio/{p}.wav", ()),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One fixture per registered dataset plugin, written once, and a valid WAV beside (outside) them."""
    names = plugins.list_parts("dataset")
    lacking = sorted(set(names) - set(LAYOUTS))
    assert not lacking, f"registered dataset plugin(s) {lacking} have no hostile-path fixture in LAYOUTS"
    top = tmp_path_factory.mktemp("layouts")
    write_clip(top / "outside.wav", 99, seconds=0.25, channels=1)
    out = {}
    for name in names:
        root = top / name / "data"
        LAYOUTS[name][0](root)
        out[name] = root
    return out


def _plant(root: Path, name: str, value: str) -> None:
    _, table, row, _, also = LAYOUTS[name]
    for relative, line in ((table, row), *also):
        path = root / relative
        path.write_text(path.read_text() + line.format(p=value) + "\n")


_part = st.text(alphabet="abxyz019_-.", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))
#: listed values that leave the root, before or after the reader joins them to its own folder
HOSTILE = st.one_of(
    st.builds(lambda ups, tail: "../" * ups + tail + ".wav", st.integers(1, 5), _part),
    st.builds(lambda head, ups, tail: f"{head}/" + "../" * ups + tail, _part, st.integers(2, 5), _part),
    st.builds(lambda tail: "/tmp/" + tail, _part),
    st.sampled_from(["../../../outside.wav", "audio/../../outside-a.wav", "/etc/passwd", "/proc/self/environ",
                     "//outside.wav", "audio/fold1/../../../outside.wav"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(LAYOUTS)), value=HOSTILE)
def test_no_reader_lists_a_path_outside_its_root(trees, tmp_path_factory, name, value):
    """A hostile row is refused naming the metadata file and line, or, where the reader joins it to a
    folder of its own and it stays inside, at worst missing; never read, never listed."""
    root = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(trees[name], root)
    _plant(root, name, value)
    written = [Path(LAYOUTS[name][1]).name] + [Path(f).name for f, _ in LAYOUTS[name][4]]
    leaves = normalise_listed(LAYOUTS[name][3].format(p=value)) is None
    with pytest.raises(DataError) as caught:
        asczoo.create_dataset(name, root, split="all", frontend="dcase-logmel")
    kinds = {p.kind for p in caught.value.problems}
    message = str(caught.value)
    if leaves:
        assert kinds & {"outside-root", "layout"}, message
        assert any(f"{w}, line" in message or f"{w}: line" in message for w in written), message
    else:
        assert kinds & {"outside-root", "layout", "missing"}, message
    try:
        kept = asczoo.create_dataset(name, root, split="all", frontend="dcase-logmel", skip_bad=True)
    except DataError:
        return  # a row not in the published layout is refused even with skip_bad
    base = Path(kept.root)
    assert all(Path(os.path.realpath(base / f)).is_relative_to(base) for f in kept.files)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_clip_linked_out_of_the_root_is_refused_by_every_reader(trees, tmp_path, name, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(trees[name], root)
    listed = asczoo.create_dataset(name, root, split="all", frontend="dcase-logmel").files[0]
    (root / listed).unlink()
    (root / listed).symlink_to(trees[name].parent.parent / "outside.wav")
    with pytest.raises(DataError, match="resolves through a symbolic link to .*outside.wav, outside the dataset root"
                       ) as caught:
        asczoo.create_dataset(name, root, split="all", frontend="dcase-logmel")
    outside = [p for p in caught.value.problems if p.kind == "outside-root"]
    assert [p.path for p in outside] == [listed] and ", line " in outside[0].message  # the list and its line
    if name == "urbansound8k":
        assert "UrbanSound8K.csv, line 2" in str(caught.value)
        monkeypatch.setenv("ASCZOO_FOLLOW_DATA_LINKS", "1")  # the owner's data disk, linked in on purpose
        assert listed in asczoo.create_dataset(name, root, split="all", frontend="dcase-logmel").files


def test_urbansound8k_refuses_a_slice_outside_the_root_naming_file_and_line(tmp_path):
    """The reported case: ``../../../outside.wav`` in UrbanSound8K.csv was read (and trained on)."""
    from asczoo.data import check_dataset

    root = _us8k(tmp_path / "data")
    write_clip(tmp_path / "outside.wav", 7, seconds=0.25, channels=1)
    _plant(root, "urbansound8k", "../../../outside.wav")
    with pytest.raises(DataError, match=r"UrbanSound8K\.csv, line 4: the path leaves the dataset root"):
        asczoo.create_dataset("urbansound8k", root, split="evaluate", fold=1)
    report = check_dataset("urbansound8k", str(root), progress=False)
    assert "outside-root" in {p.kind for p in report.errors}


def test_a_duplicate_row_in_a_tau2022_split_file_is_refused_like_everywhere(tmp_path):
    root = tau2022(tmp_path / "data")
    split = root / "split_setup" / "split100.csv"
    first = split.read_text().splitlines()[1]
    split.write_text(split.read_text() + first + "\n")
    with pytest.raises(DataError, match=r"split100\.csv, line 6: listed again \(first at .*split100\.csv, line 2\)"):
        asczoo.create_dataset("tau2022-mobile", root, split="train")
    kept = asczoo.create_dataset("tau2022-mobile", root, split="train", skip_bad=True)
    assert len(kept) == 4 and [p.kind for p in kept.skipped] == ["duplicate"]
    for name, writer, table, row in (("esc50", LAYOUTS["esc50"][0], "meta/esc50.csv", 2),
                                     ("urbansound8k", _us8k, "metadata/UrbanSound8K.csv", 2)):
        other = writer(tmp_path / name)
        path = other / table
        path.write_text(path.read_text() + path.read_text().splitlines()[row - 1] + "\n")
        with pytest.raises(DataError, match="listed again"):
            asczoo.create_dataset(name, other, split="all")
