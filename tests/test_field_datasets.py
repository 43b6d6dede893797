"""The field's dataset plugins (TAU 2020/2022 Mobile, ESC-50, UrbanSound8K, FSD50K) against hand-written
fixtures in their published layouts, and their bad-input errors (file, line, expected form)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import one_thread, write_clip  # noqa: F401 - one_thread is a fixture

import asczoo
from asczoo.data.checks import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

#: a tiny frontend for the tests that compute features (the dataset defaults are for real clips)
SMALL = {"sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 16, "segments": 4, "segment_frames": 8,
         "clip_seconds": 1.0}


def text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


# -- TAU Urban Acoustic Scenes 2020 Mobile --------------------------------------------------------------------

TAU2020_META = (
    "filename\tscene_label\tidentifier\tsource_label\n"
    "audio/airport-lisbon-1000-40000-a.wav\tairport\tlisbon-1000\ta\n"
    "audio/airport-lisbon-1000-40000-s2.wav\tairport\tlisbon-1000\ts2\n"
    "audio/bus-lyon-1001-40001-b.wav\tbus\tlyon-1001\tb\n"
    "audio/bus-lyon-1001-40001-c.wav\tbus\tlyon-1001\tc\n"
    "audio/airport-paris-1002-40002-a.wav\tairport\tparis-1002\ta\n"
    "audio/airport-paris-1002-40002-s5.wav\tairport\tparis-1002\ts5\n"
    "audio/bus-prague-1003-40003-a.wav\tbus\tprague-1003\ta\n"
    "audio/bus-prague-1003-40003-s4.wav\tbus\tprague-1003\ts4\n"
)
TAU2020_TRAIN = ("filename\tscene_label\n"
                 "audio/airport-lisbon-1000-40000-a.wav\tairport\n"
                 "audio/airport-lisbon-1000-40000-s2.wav\tairport\n"
                 "audio/bus-lyon-1001-40001-b.wav\tbus\n"
                 "audio/bus-lyon-1001-40001-c.wav\tbus\n")
TAU2020_EVALUATE = ("filename\tscene_label\n"
                    "audio/airport-paris-1002-40002-a.wav\tairport\n"
                    "audio/airport-paris-1002-40002-s5.wav\tairport\n"
                    "audio/bus-prague-1003-40003-a.wav\tbus\n"
                    "audio/bus-prague-1003-40003-s4.wav\tbus\n")


def tau2020(root: Path, *, meta: str = TAU2020_META, train: str = TAU2020_TRAIN) -> Path:
    for i, line in enumerate(meta.splitlines()[1:]):
        write_clip(root / line.split("\t")[0], i, seconds=0.25, channels=1)
    text(root / "meta.csv", meta)
    text(root / "evaluation_setup" / "fold1_train.csv", train)
    text(root / "evaluation_setup" / "fold1_evaluate.csv", TAU2020_EVALUATE)
    text(root / "evaluation_setup" / "fold1_test.csv",
         "filename\n" + "".join(line.split("\t")[0] + "\n" for line in TAU2020_EVALUATE.splitlines()[1:]))
    return root


def test_tau2020_reads_the_published_layout_with_devices(tmp_path):
    root = tau2020(tmp_path)
    train = asczoo.create_dataset("tau2020-mobile", root, split="train")
    evaluate = asczoo.create_dataset("tau2020-mobile", root, split="evaluate")
    test = asczoo.create_dataset("tau2020-mobile", root, split="test")
    assert len(train.classes) == 10 and train.classes[:2] == ["airport", "bus"]
    assert train.files == [line.split("\t")[0] for line in TAU2020_TRAIN.splitlines()[1:]]
    assert train.labels == [0, 0, 1, 1]
    assert evaluate.identifiers == ["paris-1002", "paris-1002", "prague-1003", "prague-1003"]
    assert [evaluate.device_of[f] for f in evaluate.files] == ["a", "s5", "a", "s4"]
    assert set(evaluate.unseen_devices) == {"s4", "s5", "s6"}
    assert test.labels == [-1] * 4 and test.files == evaluate.files
    # the dataset's own frontend when none is given: 44.1 kHz, 10 s, 8 x 80 frames
    assert train.frontend.config["sample_rate"] == 44100 and train.frontend.output_shape[0] == 8


def test_tau2020_refuses_a_2019_meta_csv(tmp_path):
    meta_2019 = "filename\tscene_label\tidentifier\tsource_label\n" + "".join(
        f"audio/airport-lisbon-1000-{i}-a.wav\tairport\tlisbon-1000\ta\n" for i in range(3))
    train = "filename\tscene_label\n" + "".join(f"audio/airport-lisbon-1000-{i}-a.wav\tairport\n" for i in range(3))
    root = tau2020(tmp_path, meta=meta_2019, train=train)
    with pytest.raises(DataError) as caught:
        asczoo.create_dataset("tau2020-mobile", root, split="train")
    message = str(caught.value)
    assert "meta.csv" in message and "device 'a'" in message and "s1" in message and "2019" in message


def test_tau2020_refuses_a_meta_csv_without_source_label(tmp_path):
    meta = "filename\tscene_label\tidentifier\n" + "".join(
        "\t".join(line.split("\t")[:3]) + "\n" for line in TAU2020_META.splitlines()[1:])
    root = tau2020(tmp_path, meta=meta)
    with pytest.raises(DataError, match=r"meta\.csv, line 1: header .* lacks source_label; expected .*"
                                        r"filename, scene_label, identifier, source_label"):
        asczoo.create_dataset("tau2020-mobile", root, split="train")


def test_fold_file_naming_a_missing_clip_names_file_and_line(tmp_path):
    root = tau2020(tmp_path)
    (root / "audio" / "bus-lyon-1001-40001-c.wav").unlink()
    with pytest.raises(DataError) as caught:
        asczoo.create_dataset("tau2020-mobile", root, split="train")
    assert "fold1_train.csv line 5" in str(caught.value) and "bus-lyon-1001-40001-c.wav" in str(caught.value)
    kept = asczoo.create_dataset("tau2020-mobile", root, split="train", skip_bad=True)
    assert len(kept.files) == 3 and [p.kind for p in kept.skipped] == ["missing"]


def test_label_outside_the_vocabulary_names_file_and_line(tmp_path):
    train = TAU2020_TRAIN.replace("\tbus\n", "\tbus_stop\n", 1)
    root = tau2020(tmp_path, train=train)
    with pytest.raises(DataError, match=r"fold1_train\.csv line 4: scene_label 'bus_stop' is not one of airport"):
        asczoo.create_dataset("tau2020-mobile", root, split="train")


def test_a_training_clip_from_an_unseen_device_is_refused(tmp_path):
    train = TAU2020_TRAIN + "audio/bus-prague-1003-40003-s4.wav\tbus\n"
    root = tau2020(tmp_path, train=train)
    with pytest.raises(DataError, match=r"fold1_train\.csv line 6: a training clip from device 's4'; tau2020-mobile "
                                        r"keeps s4, s5, s6 for evaluation only"):
        asczoo.create_dataset("tau2020-mobile", root, split="train")


def test_an_empty_split_is_refused_and_nothing_is_written_to_the_cache(tmp_path):
    from asczoo.data.feature_cache import extract

    root = tau2020(tmp_path, train="filename\tscene_label\n")
    with pytest.raises(DataError, match=r"fold1_train\.csv: the list is empty; expected one row per clip"):
        asczoo.create_dataset("tau2020-mobile", root, split="train")
    cache = tmp_path / "cache"
    with pytest.raises(DataError):
        extract("tau2020-mobile", root, frontend=SMALL, cache_dir=cache, progress=False)
    assert not cache.exists()


# -- TAU 2022 Mobile: 1 s clips and the DCASE 2024 split_setup -----------------------------------------------

def tau2022(root: Path) -> Path:
    files = [("audio/airport-lisbon-1000-40000-0-a.wav", "airport", "a"),
             ("audio/airport-lisbon-1000-40000-1-s1.wav", "airport", "s1"),
             ("audio/bus-lyon-1001-40001-0-b.wav", "bus", "b"),
             ("audio/bus-lyon-1001-40001-1-c.wav", "bus", "c"),
             ("audio/airport-paris-1002-40002-0-s6.wav", "airport", "s6"),
             ("audio/bus-prague-1003-40003-0-a.wav", "bus", "a")]
    for i, (file, _, _) in enumerate(files):
        write_clip(root / file, i, seconds=1.0, rate=8000, channels=1)
    text(root / "meta.csv", "filename\tscene_label\tidentifier\tsource_label\n" + "".join(
        f"{f}\t{s}\t{f.split('-')[1]}-{f.split('-')[2]}\t{d}\n" for f, s, d in files))
    for subset, keep in ((5, 2), (10, 2), (25, 2), (50, 3), (100, 4)):
        text(root / "split_setup" / f"split{subset}.csv",
             "filename\tscene_label\n" + "".join(f"{f}\t{s}\n" for f, s, _ in files[:keep]))
    text(root / "split_setup" / "test.csv", "filename\tscene_label\n" + "".join(f"{f}\t{s}\n" for f, s, _ in files[4:]))
    return root


def test_tau2022_subsets_one_second_clips_and_devices(tmp_path):
    root = tau2022(tmp_path)
    full = asczoo.create_dataset("tau2022-mobile", root, split="train", frontend=SMALL)
    small = asczoo.create_dataset("tau2022-mobile", root, split="train", subset=25, frontend=SMALL)
    evaluate = asczoo.create_dataset("tau2022-mobile", root, split="evaluate", subset=25, frontend=SMALL)
    assert (len(full), len(small), len(evaluate)) == (4, 2, 2)
    assert [evaluate.device_of[f] for f in evaluate.files] == ["s6", "a"]
    features, label = small[0]
    assert features.shape == (4, 3, 16, 8) and label == 0
    default = asczoo.create_dataset("tau2022-mobile", root, split="train")
    assert default.frontend.config["clip_seconds"] == 1.0 and default.frontend.output_shape == (8, 3, 128, 32)
    with pytest.raises(ValueError, match=r"subset 30 is not a DCASE 2024 training subset; expected one of 5, 10"):
        asczoo.create_dataset("tau2022-mobile", root, split="train", subset=30)


# -- ESC-50 -----------------------------------------------------------------------------------------------------

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def esc50(root: Path, rows: list[tuple]) -> Path:
    lines = [ESC50_HEADER] + [",".join(map(str, r)) + "\n" for r in rows]
    text(root / "meta" / "esc50.csv", "".join(lines))
    for i, row in enumerate(rows):
        write_clip(root / "audio" / row[0], i, seconds=0.25, channels=1)
    return root


def esc50_rows() -> list[tuple]:
    """Two clips (takes A and B) of each source recording, two recordings per fold, classes 0 and 1."""
    rows = []
    for fold in range(1, 6):
        for k, (target, category, flag) in enumerate(((0, "dog", "True"), (1, "rooster", "False"))):
            src = 100000 + 10 * fold + k
            for take in "AB":
                rows.append((f"{fold}-{src}-{take}-{target}.wav", fold, target, category, flag, src, take))
    return rows


def test_esc50_official_folds_never_split_a_source_recording(tmp_path):
    rows = esc50_rows()
    root = esc50(tmp_path, rows)
    source = {f"audio/{r[0]}": r[5] for r in rows}
    for fold in range(1, 6):
        train = asczoo.create_dataset("esc50", root, split="train", fold=fold)
        test = asczoo.create_dataset("esc50", root, split="evaluate", fold=fold)
        assert (len(train), len(test)) == (16, 4)
        assert not {source[f] for f in train.files} & {source[f] for f in test.files}
        assert {int(Path(f).name.split("-")[0]) for f in test.files} == {fold}
    assert train.classes == ["dog", "rooster"]
    esc10 = asczoo.create_dataset("esc50", root, split="train", fold=1, esc10=True)
    assert esc10.classes == ["dog"] and len(esc10) == 8
    with pytest.raises(DataError, match=r"fold 6 is not an official fold; expected 1 to 5"):
        asczoo.create_dataset("esc50", root, split="train", fold=6)


def test_esc50_refuses_a_source_recording_in_two_folds(tmp_path):
    rows = esc50_rows()
    name, _, *rest = rows[1]
    rows[1] = (name.replace("1-", "2-", 1), 2, *rest)  # take B of recording 100010 moved to fold 2
    root = esc50(tmp_path, rows)
    with pytest.raises(DataError, match=r"src_file '100010' is in several folds: fold 1 \(line 2\), fold 2 \(line 3\)"):
        asczoo.create_dataset("esc50", root, split="train", fold=1)


def test_esc50_refuses_another_delimiter_with_the_expected_header(tmp_path):
    root = esc50(tmp_path, esc50_rows())
    table = root / "meta" / "esc50.csv"
    table.write_text(table.read_text().replace(",", "\t"))
    with pytest.raises(DataError, match=r"esc50\.csv, line 1: header .* expected the esc50 header \(','-separated\): "
                                        r"filename, fold, target.*is it tab-separated\?"):
        asczoo.create_dataset("esc50", root, split="train")


# -- UrbanSound8K: mixed sample rates and channel counts -------------------------------------------------------

def test_urbansound8k_mixed_rates_and_channels_and_ten_folds(tmp_path):
    header = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
    clips = [("100032-3-0-0.wav", 100032, 1, 3, "dog_bark", 44100, 1, 4.0),
             ("100263-2-0-117.wav", 100263, 1, 2, "children_playing", 48000, 2, 4.0),
             ("100648-1-0-0.wav", 100648, 2, 1, "car_horn", 22050, 2, 0.5),
             ("101281-3-0-10.wav", 101281, 10, 3, "dog_bark", 11025, 1, 2.0),
             ("102305-6-0-0.wav", 102305, 3, 6, "gun_shot", 96000, 1, 1.0)]
    text(tmp_path / "metadata" / "UrbanSound8K.csv", header + "".join(
        f"{n},{fs},0.0,{sec},1,{fold},{cid},{cls}\n" for n, fs, fold, cid, cls, _, _, sec in clips))
    for i, (n, _, fold, _, _, rate, channels, sec) in enumerate(clips):
        write_clip(tmp_path / "audio" / f"fold{fold}" / n, i, seconds=sec, rate=rate, channels=channels)
    train = asczoo.create_dataset("urbansound8k", tmp_path, split="train", fold=1, frontend=SMALL)
    test = asczoo.create_dataset("urbansound8k", tmp_path, split="evaluate", fold=1, frontend=SMALL)
    assert test.files == ["audio/fold1/100032-3-0-0.wav", "audio/fold1/100263-2-0-117.wav"]
    assert len(train) == 3 and train.classes[1] == "car_horn"
    shapes = {tuple(ds[i][0].shape) for ds in (train, test) for i in range(len(ds))}
    assert shapes == {(4, 3, 16, 8)}  # every rate resampled, mono and stereo alike
    assert asczoo.create_dataset("urbansound8k", tmp_path, split="evaluate", fold=10).files == [
        "audio/fold10/101281-3-0-10.wav"]
    table = tmp_path / "metadata" / "UrbanSound8K.csv"
    table.write_text(table.read_text().replace(",3,dog_bark\n", ",3,dog\n", 1))
    with pytest.raises(DataError, match=r"UrbanSound8K\.csv: line 2: class 'dog' with classID 3; expected 'dog_bark'"):
        asczoo.create_dataset("urbansound8k", tmp_path, split="train", fold=1)


# -- FSD50K: multi-label, quoted comma-separated labels ---------------------------------------------------------

def fsd50k(root: Path, dev_rows: str | None = None) -> Path:
    truth = root / "FSD50K.ground_truth"
    text(truth / "vocabulary.csv", "0,Accordion,/m/0mkg\n1,Bark,/m/05tny_\n2,Music,/m/04rlf\n3,Guitar,/m/0342h\n")
    text(truth / "dev.csv", "fname,labels,mids,split\n" + (dev_rows or (
        '64760,"Guitar,Music","/m/0342h,/m/04rlf",train\n'
        "16399,Bark,/m/05tny_,train\n"
        '16401,"Accordion,Music","/m/0mkg,/m/04rlf",val\n')))
    text(truth / "eval.csv", 'fname,labels,mids\n37199,"Bark,Guitar","/m/05tny_,/m/0342h"\n')
    for i, (folder, name) in enumerate((("dev", 64760), ("dev", 16399), ("dev", 16401), ("eval", 37199))):
        write_clip(root / f"FSD50K.{folder}_audio" / f"{name}.wav", i, seconds=0.3 + i, rate=8000, channels=1)
    return root


def test_fsd50k_reads_quoted_label_lists_as_multi_hot_vectors(tmp_path):
    root = fsd50k(tmp_path)
    train = asczoo.create_dataset("fsd50k", root, split="train", frontend=SMALL)
    val = asczoo.create_dataset("fsd50k", root, split="evaluate", frontend=SMALL)
    final = asczoo.create_dataset("fsd50k", root, split="evaluate", evaluate_on="eval", frontend=SMALL)
    assert train.classes == ["Accordion", "Bark", "Music", "Guitar"]
    assert train.files == ["FSD50K.dev_audio/64760.wav", "FSD50K.dev_audio/16399.wav"]
    assert train.labels == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert val.labels == [[1, 0, 1, 0]] and final.labels == [[0, 1, 0, 1]]
    features, target = train[0]
    assert features.shape == (4, 3, 16, 8) and target.tolist() == [0, 0, 1, 1]
    assert train.task == "multi-label"


def test_fsd50k_label_outside_the_vocabulary_names_file_and_line(tmp_path):
    root = fsd50k(tmp_path, dev_rows='64760,"Guitar,Musik","/m/0342h,/m/04rlf",train\n16399,Bark,/m/05tny_,train\n')
    with pytest.raises(DataError, match=r"dev\.csv: line 2: label\(s\) 'Musik' not in vocabulary\.csv"):
        asczoo.create_dataset("fsd50k", root, split="train")


def test_fsd50k_unquoted_label_list_is_refused_with_the_expected_form(tmp_path):
    root = fsd50k(tmp_path, dev_rows="64760,Guitar,Music,/m/0342h,/m/04rlf,train\n")
    with pytest.raises(DataError, match=r"dev\.csv: 1 row\(s\) .*line 2: 6 field\(s\).* expected 4 ','-separated"):
        asczoo.create_dataset("fsd50k", root, split="train")


# -- synthetic layouts, frontend defaults, the per-device report --------------------------------------------------

@pytest.mark.parametrize("layout", ["esc50", "urbansound8k", "tau2020-mobile", "tau2022-mobile", "fsd50k"])
def test_synth_layout_writes_what_the_reader_reads(tmp_path, layout, capsys):
    from asczoo.cli import main

    clips = "180" if layout.startswith("tau") else "40"
    assert main(["synth", str(tmp_path / "d"), "--layout", layout, "--clips", clips, "--sample-rate", "8000"]) == 0
    for split in ("train", "evaluate"):
        ds = asczoo.create_dataset(layout, tmp_path / "d", split=split)
        assert len(ds) > 0
    assert main(["check-data", str(tmp_path / "d"), "--dataset", layout, "--no-progress"]) == 0


def test_dataset_frontend_defaults_go_under_the_stage_overrides():
    from asczoo.training.runs import dataset_model_overrides

    tau = dataset_model_overrides("tau2022-mobile", "atresn-net-resnet18")
    assert tau["frontend"]["clip_seconds"] == 1.0 and "task" not in tau
    assert dataset_model_overrides("fsd50k", "resnet18-segments")["task"] == "multi-label"
    assert dataset_model_overrides("dcase2019-task1a", "resnet18-segments") == {}


def test_device_report_seen_unseen_and_macro():
    from asczoo.training.evaluation import device_report

    labels = [0, 1, 0, 1, 0, 1, 0]
    predicted = [0, 1, 1, 1, 0, 0, 0]
    devices = ["a", "a", "b", "b", "s4", "s4", "s5"]
    report = device_report(labels, predicted, devices, unseen=("s4", "s5", "s6"))
    assert report["per_device"]["a"] == {"accuracy": 1.0, "correct": 2, "clips": 2}
    assert report["seen"] == pytest.approx(0.75)  # (1.0 + 0.5) / 2
    assert report["unseen"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert report["macro"] == pytest.approx(0.75)
    assert report["per_device"]["s5"]["clips"] == 1


def test_multi_label_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    from asczoo.training.engine import Features, Runtime, evaluate_features

    class Fixed(torch.nn.Module):
        task = "multi-label"

        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits[x[:, 0, 0, 0, 0].long()]

    class Data(torch.utils.data.Dataset):
        labels = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((1, 1, 1, 1), float(i)), torch.tensor(self.labels[i])

    logits = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 1.0, -2.0], [0.5, 0.2, 0.1], [-3.0, 0.3, 1.0]])
    runtime = Runtime(device=torch.device("cpu"), num_workers=0, progress=False, precision="fp32")
    result = evaluate_features(Fixed(logits), Features(Data(), runtime=runtime, in_memory=False), runtime=runtime,
                               batch_size=3, num_classes=3)
    truth = torch.tensor(Data.labels)
    expected = [average_precision_score(truth[:, k], torch.sigmoid(logits)[:, k]) for k in range(3)]
    assert result["per_class_ap"] == pytest.approx(expected)
    assert result["mAP"] == pytest.approx(sum(expected) / 3) and result["metric"] == "mAP"


def test_recipe_task_is_validated_and_must_match_the_dataset(tmp_path):
    from asczoo.recipes.schema import RecipeError
    from asczoo.cli import main

    with pytest.raises(RecipeError, match=r"key 'task' is 'multilabel'; expected single-label or multi-label"):
        asczoo.create_model("resnet18-segments", overrides={"task": "multilabel"})
    assert main(["synth", str(tmp_path / "d"), "--layout", "fsd50k", "--clips", "10", "--sample-rate", "8000"]) == 0
    recipe = {"data": {"dataset": "fsd50k"}, "engine": {"threads": 1, "num_workers": 0, "progress": False},
              "stages": [{"name": "s", "model": "resnet18-segments", "overrides": {"task": "single-label"},
                          "unit": "segment", "epochs": 1, "batch_size": 4, "optimizer": {"name": "sgd", "lr": 0.1}}]}
    with pytest.raises(RecipeError, match=r"the model's task is 'single-label' but dataset 'fsd50k' is 'multi-label'"):
        asczoo.train(recipe, data=tmp_path / "d", out=tmp_path / "run")
    assert not (tmp_path / "d" / ".asczoo-cache").exists()  # refused before any feature was extracted


def test_check_data_expects_a_mono_dataset_to_be_mono(tmp_path):
    from asczoo.data import check_dataset

    root = tau2020(tmp_path)
    write_clip(root / "audio" / "bus-lyon-1001-40001-b.wav", 0, seconds=0.25, channels=2)
    report = check_dataset("tau2020-mobile", str(root), progress=False)
    channel = [p for p in report.problems if p.kind == "channels"]
    assert [p.path for p in channel] == ["audio/bus-lyon-1001-40001-b.wav"]  # the one stereo file, not the mono ones
    assert "expected 1" in channel[0].message
