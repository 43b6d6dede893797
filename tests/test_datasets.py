"""Dataset plugins: the DCASE 2019 / 2018 development layouts and ``folder``, on tiny generated data."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

import asczoo
from asczoo.recipes.schema import RecipeError
from asczoo.data.audio import read_audio
from asczoo.data.checks import DataError
from asczoo.data.dataset_base import location_of, location_split, read_setup_file
from data_fixtures import CLASSES, TINY_FRONTEND, make_dcase_tree, one_thread, write_clip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("soundfile")  # audio fixtures need libsndfile


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Both years, with and without header lines."""
    out = {}
    for year in (2019, 2018):
        for header in (True, False):
            root = tmp_path_factory.mktemp(f"dcase{year}{'h' if header else ''}")
            out[(year, header)] = (root, make_dcase_tree(root, year=year, header=header))
    return out


@pytest.mark.parametrize("year", [2019, 2018])
@pytest.mark.parametrize("header", [True, False])
def test_dcase_plugins_read_the_development_layout(trees, year, header):
    root, info = trees[(year, header)]
    name = f"dcase{year}-task1a"
    train = asczoo.create_dataset(name, root, frontend=TINY_FRONTEND)  # fold 1, train by default
    evaluate = asczoo.create_dataset(name, root, split="evaluate", frontend=TINY_FRONTEND)
    test = asczoo.create_dataset(name, root, split="test", frontend=TINY_FRONTEND)
    everything = asczoo.create_dataset(name, root, split="all", frontend=TINY_FRONTEND)
    assert train.classes == sorted(CLASSES)
    assert train.files == info["train"] and evaluate.files == info["evaluate"]
    assert test.files == info["evaluate"] and set(test.labels) == {-1}
    assert sorted(everything.files) == sorted(info["train"] + info["evaluate"])
    assert [train.classes[y] for y in train.labels] == [info["labels"][f] for f in train.files]
    assert not set(train.identifiers) & set(evaluate.identifiers)  # locations stay on one side
    features, label = evaluate[3]
    assert features.shape == (4, 3, 32, 24) and features.dtype == torch.float32
    assert label == evaluate.classes.index(info["labels"][evaluate.files[3]])
    waveform, rate = read_audio(root / evaluate.files[3])
    torch.testing.assert_close(features, asczoo.create_frontend(**TINY_FRONTEND)(waveform, rate))


def test_setup_files_either_extension_and_separator(tmp_path):
    make_dcase_tree(tmp_path, year=2018)
    setup = tmp_path / "evaluation_setup"
    # a 2018-layout tree read by the 2019 plugin (it falls back to .txt), and comma-separated lists
    assert len(asczoo.create_dataset("dcase2019-task1a", tmp_path, frontend=TINY_FRONTEND)) == 12
    text = (setup / "fold1_train.txt").read_text().replace("\t", ",")
    (setup / "fold1_train.txt").unlink()
    (setup / "fold1_train.csv").write_text(text)
    assert len(asczoo.create_dataset("dcase2018-task1a", tmp_path, frontend=TINY_FRONTEND)) == 12
    assert read_setup_file(setup / "fold1_train.csv")[0] == ("audio/airport-barcelona-0-0-a.wav", "airport")
    with pytest.raises(DataError, match=r"fold2_train\.txt or .*fold2_train\.csv"):
        asczoo.create_dataset("dcase2018-task1a", tmp_path, fold=2, frontend=TINY_FRONTEND)


def test_class_list_without_meta_comes_from_the_setup_files(tmp_path):
    make_dcase_tree(tmp_path, meta=False, classes=("tram", "bus"))
    ds = asczoo.create_dataset("dcase2019-task1a", tmp_path, split="evaluate", frontend=TINY_FRONTEND)
    assert ds.classes == ["bus", "tram"]
    forced = asczoo.create_dataset("dcase2019-task1a", tmp_path, frontend=TINY_FRONTEND,
                                   classes=["tram", "bus", "park"])
    assert forced.classes == ["tram", "bus", "park"] and set(forced.labels) == {0, 1}


def test_custom_split_keeps_locations_together(trees):
    root, _ = trees[(2019, True)]
    kw = dict(fold=None, frontend=TINY_FRONTEND, evaluate_fraction=0.4, seed=3)
    train = asczoo.create_dataset("dcase2019-task1a", root, split="train", **kw)
    evaluate = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", **kw)
    assert train.files and evaluate.files
    assert not set(train.identifiers) & set(evaluate.identifiers)
    assert sorted(train.files + evaluate.files) == sorted(
        asczoo.create_dataset("dcase2019-task1a", root, split="all", frontend=TINY_FRONTEND).files)
    again = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", **kw)
    assert again.files == evaluate.files  # deterministic by seed


def test_location_split_never_splits_a_location():
    rng = random.Random(0)
    groups = [f"loc{rng.randrange(40)}" for _ in range(500)]
    labels = [int(g[3:]) % 5 for g in groups]
    evaluate = location_split(groups, labels, 0.3, seed=1)
    sides = {}
    for g, e in zip(groups, evaluate):
        assert sides.setdefault(g, e) == e
    share = sum(evaluate) / len(evaluate)
    assert 0.2 < share < 0.45
    for label in range(5):  # every class on both sides
        assert {e for e, y in zip(evaluate, labels) if y == label} == {True, False}
    with pytest.raises(ValueError, match="evaluate_fraction"):
        location_split(groups, labels, 1.5, seed=0)


def test_location_of_names():
    assert location_of("audio/airport-barcelona-0-3-a.wav") == "barcelona-0"
    assert location_of("x/rec_17_take2.wav", r"rec_(\d+)") == "17"
    assert location_of("x/rec_17_take2.wav", r"(?P<location>rec_\d+)") == "rec_17"
    assert location_of("clips/whatever.wav") == "whatever"


def test_folder_with_a_table(tmp_path):
    rows = ["file\tlabel\tlocation"]
    for i in range(12):
        label = ("dog", "rain", "car")[i % 3]
        write_clip(tmp_path / "clips" / f"c{i}.wav", i, tone=200.0 + 300 * (i % 3))
        rows.append(f"clips/c{i}.wav\t{label}\tsite{i // 2}")
    (tmp_path / "labels.tsv").write_text("\n".join(rows) + "\n")
    train = asczoo.create_dataset("folder", tmp_path, split="train", frontend=TINY_FRONTEND)
    evaluate = asczoo.create_dataset("folder", tmp_path, split="evaluate", frontend=TINY_FRONTEND)
    test = asczoo.create_dataset("folder", tmp_path, split="test", frontend=TINY_FRONTEND)
    assert train.classes == ["car", "dog", "rain"]
    assert len(train) + len(evaluate) == 12 and len(evaluate) > 0
    assert not set(train.identifiers) & set(evaluate.identifiers)
    assert test.files == evaluate.files and set(test.labels) == {-1}
    assert train[0][0].shape == (4, 3, 32, 24)
    other_fold = asczoo.create_dataset("folder", tmp_path, split="evaluate", fold=2, frontend=TINY_FRONTEND)
    assert sorted(other_fold.files) != sorted(evaluate.files) or len(evaluate) == 0
    # a CSV without header, given explicitly
    csv = "\n".join(line.replace("\t", ",") for line in rows[1:])
    (tmp_path / "mine.csv").write_text(csv)
    ds = asczoo.create_dataset("folder", tmp_path, split="all", labels="mine.csv", frontend=TINY_FRONTEND)
    assert len(ds) == 12 and ds.identifiers[0] == "site0"


def test_folder_with_class_subfolders(tmp_path):
    for c, label in enumerate(("birds", "engine")):
        for i in range(4):
            write_clip(tmp_path / label / f"{label}-park-{i}-0-a.wav", 10 * c + i, tone=400.0 + 500 * c)
    (tmp_path / "engine" / "notes.txt").write_text("not audio")
    ds = asczoo.create_dataset("folder", tmp_path, split="all", frontend=TINY_FRONTEND)
    assert ds.classes == ["birds", "engine"] and len(ds) == 8
    assert ds.files[0] == "birds/birds-park-0-0-a.wav" and ds.identifiers[0] == "park-0"
    assert [ds.classes[y] for y in ds.labels] == [f.split("/")[0] for f in ds.files]


def test_folder_without_labels_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labels.tsv/labels.csv and no class sub-folders"):
        asczoo.create_dataset("folder", tmp_path, frontend=TINY_FRONTEND)


def test_bad_arguments_are_refused(trees):
    root, _ = trees[(2019, True)]
    with pytest.raises(ValueError, match="split 'dev'"):
        asczoo.create_dataset("dcase2019-task1a", root, split="dev")
    with pytest.raises(RecipeError, match="unknown key 'labels'"):
        asczoo.create_dataset("dcase2019-task1a", root, labels="x.tsv")
    with pytest.raises(RecipeError, match="seed"):
        asczoo.create_dataset("dcase2019-task1a", root, seed="one")
    with pytest.raises(KeyError, match="no dataset named 'dcase2020'"):
        asczoo.create_dataset("dcase2020", root)


def test_listing_problems_raise_or_are_skipped(tmp_path):
    make_dcase_tree(tmp_path)
    setup = tmp_path / "evaluation_setup" / "fold1_train.csv"
    lines = setup.read_text().splitlines()
    lines += [lines[1], "audio/nowhere-x-0-0-a.wav\tbus", lines[2].replace("airport", "lobby")]
    setup.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        asczoo.create_dataset("dcase2019-task1a", tmp_path, frontend=TINY_FRONTEND)
    text = str(err.value)
    assert "duplicate" in text and "missing" in text and "unknown-label" in text and "'lobby'" in text
    ds = asczoo.create_dataset("dcase2019-task1a", tmp_path, frontend=TINY_FRONTEND, skip_bad=True)
    assert {p.kind for p in ds.skipped} == {"duplicate", "missing", "unknown-label"}
    assert len(ds) == 12 and "audio/nowhere-x-0-0-a.wav" not in ds.files


def test_cached_dataset_matches_the_audio(tmp_path):
    root = tmp_path / "data"
    make_dcase_tree(root)
    cache = tmp_path / "cache"
    cached = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", frontend=TINY_FRONTEND, cache_dir=cache)
    live = asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", frontend=TINY_FRONTEND)
    assert cached.files == live.files and cached.labels == live.labels
    for i in range(len(live)):
        a, b = cached[i][0], live[i][0]
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=0.02, rtol=2e-3)  # float16 storage
    mean, std = cached.normalization()
    assert mean.shape == std.shape == (3, 32) and bool((std > 0).all())
    loader = torch.utils.data.DataLoader(cached, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 4, 3, 32, 24) and y.tolist() == cached.labels[:4]
    shutil.rmtree(root / "audio")  # cached features no longer need the audio ... but the listing does
    with pytest.raises(DataError, match="missing"):
        asczoo.create_dataset("dcase2019-task1a", root, split="evaluate", frontend=TINY_FRONTEND, cache_dir=cache)
