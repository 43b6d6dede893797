"""The conformance suite (``asczoo.testing``) on every built-in part, and on parts broken on purpose.

Every part a built-in plugin registers is checked through the very call a third-party plugin's tests
make (``check_relation_block("atresn")``), parametrised over the registries themselves, so a new
built-in part is checked without editing this file (datasets need a fixture, see ``DATASET_ROOTS``).
The second half shows that each check catches the fault it is named after.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from asczoo import plugins
from asczoo.testing import (
    CHECKS, TINY_OVERRIDES, ConformanceError, check_aggregator, check_augmentation, check_dataset,
    check_head, check_relation_block, plugin_import_problems,
)

TINY_BACKBONE = TINY_OVERRIDES["backbone"]
#: extra variants per built-in part: keyword arguments of its check (``options`` go to the factory)
VARIANTS: dict[tuple[str, str], list[dict]] = {
    ("backbone", "timm-resnet"): [
        {"options": TINY_BACKBONE},
        {"options": {**TINY_BACKBONE, "arch": "resnetv2_18"}},
        {"options": {**TINY_BACKBONE, "stem": "authors"}},
    ],
    ("inflator", "inflate-3d"): [
        {},
        {"options": {"mode": "conv3d"}},
        {"options": {"mode": "conv3d", "temporal_kernel": 3, "temporal_init": "centre"}},
        {"options": {"mode": "conv3d", "temporal_kernel": 3}, "segment_equivalence": False},
    ],
    ("relation_block", "atresn"): [
        {"onnx": True},
        # the authors' variant: shrunk maps need the 4x larger maps of the authors' stem inside a model
        {"options": {"shrink": True, "distance": "cosine", "position_distance": "summed"},
         "model_overrides": {"backbone": {"stem": "authors"}}},
        {"options": {"aggregator": "mean", "position_encoding": "none", "exclude_same_segment": False}},
    ],
    ("relation_block", "tresn"): [{"onnx": True}],
    ("relation_block", "senot"): [{"onnx": True}],
    ("head", "avgpool-fc"): [{"onnx": True}],
    ("frontend", "dcase-logmel"): [{"options": TINY_OVERRIDES["frontend"]}, {}],
    # the conformance batch has 16 mel bands; two tiny responses (8 and 16 kHz) from tests/fixtures
    ("augmentation", "device-ir"): [{"options": {"folder": str(Path(__file__).parent / "fixtures" / "device_irs"),
                                                 "p": 0.7, "sample_rate": 8000, "n_fft": 64, "n_mels": 16}}],
    ("augmentation", "freq-mixstyle"): [{}, {"options": {"p": 1.0, "alpha": 0.3}}],
    ("augmentation", "roll"): [{}, {"options": {"axis": "freq", "max_shift": 3, "p": 0.5}}],
}


def builtin(kind: str, name: str) -> bool:
    return plugins.get_part(kind, name).factory.__module__.startswith("asczoo_plugins")


def cases(*kinds: str):
    for kind in kinds:
        for name in plugins.list_parts(kind):
            if builtin(kind, name):
                for i, variant in enumerate(VARIANTS.get((kind, name), [{}])):
                    yield pytest.param(kind, name, variant, id=f"{name}-{i}" if i else name)


@pytest.mark.parametrize("kind,name,variant", list(cases(
    "backbone", "inflator", "relation_block", "aggregator", "position_encoding", "head", "frontend", "augmentation",
)))
def test_builtin_part_conforms(kind, name, variant):
    report = CHECKS[kind](name, **variant)
    assert report.passed
    assert all(reason for reason in report.skipped.values())


# -- datasets: a dataset needs data, so each built-in dataset names how to lay out a fixture ----------

def _dcase2019(root):
    from data_fixtures import make_dcase_tree

    make_dcase_tree(root, year=2019)


def _dcase2018(root):
    from data_fixtures import make_dcase_tree

    make_dcase_tree(root, year=2018, header=False)


def _folder(root):
    from data_fixtures import make_dcase_tree

    make_dcase_tree(root, year=2019)
    shutil.copy(root / "meta.csv", root / "labels.tsv")  # filename, scene_label, identifier columns


def _synthetic_layout(name, **options):
    """The dataset plugin's own synthetic layout (asczoo synth --layout), small and at 8 kHz."""
    def make(root):
        plugins.get_part("dataset", name).factory.synthesize(root, sample_rate=8000, overwrite=True, **options)
    return make


DATASET_ROOTS = {"dcase2019-task1a": _dcase2019, "dcase2018-task1a": _dcase2018, "folder": _folder,
                 "tau2020-mobile": _synthetic_layout("tau2020-mobile", clips=180, seconds=0.5),
                 "tau2022-mobile": _synthetic_layout("tau2022-mobile", clips=180),
                 "esc50": _synthetic_layout("esc50", clips=40, seconds=0.5),
                 "urbansound8k": _synthetic_layout("urbansound8k", clips=20, seconds=1.0),
                 "fsd50k": _synthetic_layout("fsd50k", clips=10)}


@pytest.mark.parametrize("name", [n for n in plugins.list_parts("dataset") if builtin("dataset", n)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_builtin_dataset_conforms(name, split, tmp_path):
    from data_fixtures import TINY_FRONTEND

    import asczoo

    assert name in DATASET_ROOTS, f"built-in dataset {name!r} has no fixture: add one to DATASET_ROOTS"
    DATASET_ROOTS[name](tmp_path)
    dataset = asczoo.create_dataset(name, tmp_path, split=split, frontend=TINY_FRONTEND)
    check_dataset(dataset, reopen=lambda root: asczoo.create_dataset(name, root, split=split, frontend=TINY_FRONTEND))
    if getattr(dataset, "task", "single-label") == "multi-label" and split != "test":
        labels = torch.stack([dataset[i][1] for i in range(len(dataset))])
        assert labels.shape == (len(dataset), len(dataset.classes)) and bool((labels.sum(1) >= 1).all())
        return
    labels = {int(dataset[i][1]) for i in range(len(dataset))}
    assert labels == {-1} if split == "test" else labels <= set(range(len(dataset.classes)))


def test_every_kind_of_part_has_a_check():
    assert set(CHECKS) == set(plugins.PART_HOOKS)


# -- the suite catches what it claims to catch ---------------------------------------------------------

class Residual(nn.Module):
    """``x + BN(W x)`` per point, zero-initialised: a correct minimal block the faults below modify."""

    def __init__(self, channels: int, zero: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv3d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm3d(channels)
        if zero:
            nn.init.zeros_(self.norm.weight)

    def relation(self, x):
        return self.norm(self.proj(x.transpose(1, 2))).transpose(1, 2)

    def forward(self, x):
        return x + self.relation(x)


class WrongChannels(Residual):
    def forward(self, x):
        return super().forward(x)[:, :, :-1]


class InPlace(Residual):
    def forward(self, x):
        return x.add_(self.relation(x))


class BatchMean(Residual):
    def forward(self, x):
        return x + self.relation(x) + 0.1 * self.norm.weight.view(1, 1, -1, 1, 1) * x.mean(dim=0, keepdim=True)


class Unused(Residual):
    def __init__(self, channels):
        super().__init__(channels)
        self.spare = nn.Linear(channels, channels)


class Noisy(Residual):
    def forward(self, x):
        return x + self.relation(x) * (1 + 0.01 * torch.rand(()))


class DoubleZero(Residual):
    """``x + gamma * (W x)`` with both W and gamma zero: the identity forever, training cannot leave it."""

    def __init__(self, channels):
        super().__init__(channels)
        nn.init.zeros_(self.proj.weight)

    def relation(self, x):
        return self.proj(x.transpose(1, 2)).transpose(1, 2) * self.norm.weight.view(1, -1, 1, 1)


def factory_of(cls, **fixed):
    def factory(*, channels: int):
        """A block built for the tests."""
        return cls(channels, **fixed)

    return factory


@pytest.mark.parametrize("cls,fixed,failing", [
    (WrongChannels, {}, "shapes"),
    (InPlace, {}, "shapes"),
    (Residual, {"zero": False}, "zero_init"),
    (DoubleZero, {}, "zero_init"),
    (BatchMean, {}, "batch_independence"),
    (Unused, {}, "gradients"),
    (Noisy, {}, "determinism"),
])
def test_relation_checks_catch_their_fault(cls, fixed, failing):
    check_relation_block(factory_of(Residual))  # the unmodified block passes
    with pytest.raises(ConformanceError) as caught:
        check_relation_block(factory_of(cls, **fixed), skip=["describe"])
    message = str(caught.value)
    assert f"\n  - {failing}: " in message, message
    assert "block factory" in message.splitlines()[0]


def test_relation_check_reports_and_validates_its_arguments():
    report = check_relation_block(factory_of(Residual, zero=False), zero_init=False, skip=["bf16_autocast"])
    assert report.skipped["zero_init"].startswith("zero_init=False")
    assert report.skipped["bf16_autocast"] == "skipped by the caller"
    assert "in_model" in report.skipped  # a factory, not a registered name
    assert "signature" in report.passed and "gradients" in report.passed
    with pytest.raises(ValueError, match="unknown check"):
        check_relation_block(factory_of(Residual), skip=["no-such-check"])
    with pytest.raises(ConformanceError, match="signature: .*unknown key 'k'"):
        check_relation_block(factory_of(Residual), options={"k": 4})


def test_other_checks_catch_faults():
    def first_neighbour(*, channels: int):
        """Uses the order of the neighbours."""
        return _Lambda(lambda e: e[:, :, 0])

    with pytest.raises(ConformanceError, match="order_invariance"):
        check_aggregator(first_neighbour)
    check_aggregator(first_neighbour, order_invariant=False)

    def batch_norm_head(*, in_features: int, num_classes: int):
        """Normalises logits over the batch even in eval mode."""
        linear = nn.Linear(in_features, num_classes)
        return _Lambda(lambda f: (lambda y: y - y.mean(0))(linear(f.mean(dim=(1, 3, 4)))), linear)

    with pytest.raises(ConformanceError, match="batch_independence"):
        check_head(batch_norm_head)

    def unnormalised(**_):
        """Scales the targets."""
        return lambda x, y: (x, y * 2)

    def in_place(**_):
        """Flips the features in place."""
        return lambda x, y: (x.neg_(), y)

    with pytest.raises(ConformanceError, match="targets"):
        check_augmentation(unnormalised)
    with pytest.raises(ConformanceError, match="inputs_untouched"):
        check_augmentation(in_place)

    class Bad(torch.utils.data.Dataset):
        classes = ["a", "b"]
        files = ["x.wav", "y.wav"]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(2, 3, 4, 5, dtype=torch.float64), 2

    with pytest.raises(ConformanceError) as caught:
        check_dataset(Bad())
    assert "items: item 0 features: dtype torch.float64" in str(caught.value)


class _Lambda(nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x)


def test_plugin_import_check_flags_internals(tmp_path):
    (tmp_path / "plugin.py").write_text(textwrap.dedent("""
        import asczoo
        import asczoo.hub
        from asczoo import hookimpl, create_model, interfaces
        from asczoo.ops import semantic_knn
        from asczoo.plugins import get_part, host
        from asczoo.arguments import check_arguments
        from asczoo import plugins

        plugins.reset()
        asczoo.plugins._HOST
        asczoo.ops.to_points
        interfaces.Backbone
    """))
    problems = plugin_import_problems(tmp_path)
    flagged = sorted(p.split(": ", 1)[1] for p in problems)
    assert flagged == [
        "asczoo.plugins._HOST is not public asczoo API",
        "asczoo.plugins.host is not public asczoo API",
        "asczoo.plugins.reset is not public asczoo API",
        "module 'asczoo.arguments' is not public asczoo API",
        "module 'asczoo.hub' is not public asczoo API",
    ]


def test_builtin_plugins_use_only_the_public_api():
    """What the built-ins need (ClipDataset, segment_starts, check_arguments, ...) is public."""
    plugins_dir = Path(__file__).resolve().parents[1] / "plugins" / "asczoo_plugins"
    assert plugin_import_problems(plugins_dir) == []
