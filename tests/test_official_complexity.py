"""`asczoo complexity --dcase`: the DCASE 2025 organisers' torchinfo figure beside asczoo's, differences by op."""

from __future__ import annotations

import json
import sys

import pytest

import asczoo
from asczoo.cli import main
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
LOW_COMPLEXITY = asczoo.list_models("lc-*")


def test_there_are_low_complexity_entries():
    assert {"lc-resnet-narrow", "lc-atresn-narrow"} <= set(LOW_COMPLEXITY)


@pytest.mark.parametrize("name", LOW_COMPLEXITY)
def test_official_and_asczoo_counts_agree_or_differ_by_named_ops(name, capsys):
    pytest.importorskip("torchinfo")
    assert main(["complexity", name, "--dcase", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    official = out["dcase_official"]
    ours, theirs = out["macs_per_clip"], official["macs"]
    assert official["available"] and theirs > 0 and official["param_bytes"] == 4 * out["parameters"]
    # every MAC of difference is booked to an op or a module kind the note names
    assert official["unexplained"] == 0, official
    if abs(ours - theirs) > 0.03 * theirs:
        assert official["unseen"], "a difference above 3 % must come from ops torchinfo cannot see"
    for op in official["unseen"]:
        assert op in official["note"]
    if asczoo.create_model(name).relations:
        assert "bmm" in official["unseen"], "the kNN's bmm is outside any Conv/Linear module"


def test_fp16_is_counted_at_two_bytes_as_packaged(capsys):
    pytest.importorskip("torchinfo")
    from asczoo.analysis.official_complexity import official_count
    from asczoo.deploy.quantize import quantize_fp16
    from asczoo.testing.tiny import tiny_overrides

    model = asczoo.create_model("lc-resnet-narrow", overrides=tiny_overrides()).eval()
    assert official_count(quantize_fp16(model))["param_bytes"] == 2 * sum(p.numel() for p in model.parameters())


def test_without_torchinfo_it_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchinfo", None)  # import fails as if not installed
    assert main(["complexity", "lc-resnet-narrow", "--set", "backbone.channels=[4,4,4,4]", "--dcase"]) == 0
    out = capsys.readouterr().out
    assert "not computed: torchinfo is not installed" in out and "MACs per clip" in out
