"""The low-complexity registry entries meet the DCASE 2024/2025 Task 1 limits, as their recipes build them."""

from __future__ import annotations

import pytest
import torch

import asczoo
from asczoo.analysis.complexity import DCASE_MAX_MACS_PER_SECOND, DCASE_MAX_PARAM_BYTES, measure
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
ENTRIES = {"lc-resnet-narrow": "tau2022-lc-resnet-narrow", "lc-atresn-narrow": "tau2022-lc-atresn-narrow"}


def student(recipe: str):
    """The student model exactly as the training recipe builds it on tau2022-mobile (dataset defaults,
    then the stage's overrides)."""
    from asczoo.recipes import training_recipes
    from asczoo.training.runs import _build_model

    _, rec = training_recipes.load(recipe)
    stage = next(s for s in rec["stages"] if s["name"] == "student")
    return _build_model(stage, None, rec["data"]["dataset"])


@pytest.mark.parametrize("name", list(ENTRIES))
def test_entry_meets_the_dcase_limits_at_int8_for_1s_tau2022_clips(name):
    result = measure(asczoo.create_model(name), precision="int8")
    assert result.clip_seconds == 1.0
    assert result.parameter_bytes <= DCASE_MAX_PARAM_BYTES
    assert result.macs_per_second <= DCASE_MAX_MACS_PER_SECOND
    assert result.dcase_limits["holds"]
    built = student(ENTRIES[name])
    assert built.name == name
    frontend = built.frontend_config
    assert (frontend["sample_rate"], frontend["clip_seconds"], frontend["segments"], frontend["segment_frames"]) == (
        44100, 1.0, 8, 32), "the tau2022-mobile layout"
    assert measure(built, precision="int8").macs_per_clip == result.macs_per_clip


def test_the_pair_is_matched_in_complexity_and_differs_by_relation_blocks():
    plain, relation = (measure(asczoo.create_model(n), precision="int8") for n in ENTRIES)
    assert abs(plain.parameters - relation.parameters) / plain.parameters < 0.05
    assert abs(plain.macs_per_clip - relation.macs_per_clip) / plain.macs_per_clip < 0.03
    model = asczoo.create_model("lc-atresn-narrow")
    assert sorted(model.relations) == ["res3_1", "res3_2"] and not asczoo.create_model("lc-resnet-narrow").relations
    grouper = sum(r["macs"] for r in relation.layers if r["module"].endswith("grouper"))
    assert grouper > 0, "the relation blocks' kNN is counted"


@pytest.mark.parametrize("name,keep", [("lc-resnet-narrow", []), ("lc-atresn-narrow", ["relations"])])
def test_stored_int8_bytes_stay_within_the_limit(name, keep):
    from asczoo.deploy.quantize import quantize_int8

    model = asczoo.create_model(name).eval()
    calibration = [torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(0))]
    stored = measure(quantize_int8(model, calibration, keep_float=keep).model)
    assert stored.parameter_bytes <= DCASE_MAX_PARAM_BYTES, stored.summary()
