"""`asczoo complexity`: MACs from torch's operator counter, checked against hand-computed figures."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from asczoo import plugins
from asczoo.cli import main
from asczoo.analysis.complexity import DCASE_MAX_MACS_PER_SECOND, format_table, measure
from data_fixtures import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


class PlainConvNet(nn.Module):
    """Two convolutions and a linear layer on a (1, 8, 10) input: every MAC countable by hand."""

    input_shape = (1, 8, 10)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)          # out (4, 8, 10)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)  # out (6, 4, 5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_plain_conv_net_matches_hand_computed_macs_and_bytes():
    net = PlainConvNet()
    result = measure(net, precision="int8", clip_seconds=2.0)
    conv1 = 4 * 8 * 10 * (1 * 3 * 3)
    conv2 = 6 * 4 * 5 * (4 * 3 * 3)
    fc = 6 * 3
    assert result.macs_per_clip == conv1 + conv2 + fc
    assert result.macs_per_second == pytest.approx((conv1 + conv2 + fc) / 2.0)
    params = (4 * 9 + 4) + (6 * 36 + 6) + (6 * 3 + 3)
    assert result.parameters == params
    assert result.parameter_bytes == params  # int8: one byte each
    assert measure(net, precision="fp16").parameter_bytes == 2 * params
    rows = {(r["module"], r["op"].removeprefix("aten.")): r["macs"] for r in result.layers}
    assert rows == {("conv1", "convolution"): conv1, ("conv2", "convolution"): conv2, ("fc", "addmm"): fc}
    assert result.dcase_limits["holds"]
    assert "conv2" in format_table(result)


def test_relation_block_counts_the_knn_bmm_and_the_pair_mlps():
    # a TReSN block (max pooling: no MACs in the aggregator) on 16 channels, 2 segments of 3 x 4 points
    c, k, n, f, t = 16, 2, 2, 3, 4
    block = plugins.get_part("relation_block", "tresn").factory(channels=c, k=k).eval()
    p = n * f * t
    widths = block.describe()["pair_widths"]
    d = block.position_encoding.out_dim  # gamma: 10 -> d
    knn = p * p * (c + 1)                  # [x_i, 1] . [2 x_j, -|x_j|^2] for every pair
    gamma = p * k * 10 * d                  # position MLP on every pair
    first = p * c * 2 * widths[0] + p * k * d * widths[0]  # W_s x, W_i x per point, W_p pos per pair
    mlp = sum(p * k * a * b for a, b in zip(widths[:-1], widths[1:]))  # pair MLP layers
    output = p * widths[-1] * c             # back to C channels
    block.input_shape = (n, c, f, t)
    result = measure(block, clip_seconds=1.0)
    assert result.macs_per_clip == knn + gamma + first + mlp + output
    grouper = sum(r["macs"] for r in result.layers if r["module"] == "grouper")
    assert grouper == knn, "the kNN distances (bmm) must be counted"
    assert sum(r["macs"] for r in result.layers) == result.macs_per_clip


def test_rows_sum_to_total_when_relation_blocks_run_inside_backbone_hooks():
    import asczoo

    model = asczoo.create_model("atresn-net-resnet18", overrides={"relation": {"placement": ["res2_1"]}})
    result = measure(model)
    assert sum(r["macs"] for r in result.layers) == result.macs_per_clip
    assert any(r["module"].startswith("relations.res2_1.grouper") and r["op"] == "aten.bmm" for r in result.layers)
    assert result.macs_per_second > DCASE_MAX_MACS_PER_SECOND and not result.dcase_limits["holds"]


def test_cli_prints_figures_and_json(capsys):
    assert main(["complexity", "resnet18-3d", "--precision", "fp16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["precision"] == "fp16" and data["parameter_bytes"] == 2 * data["parameters"]
    assert data["dcase_limits"]["holds"] is False
    assert main(["complexity", "resnet18-3d", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "MACs per clip" in out and "backbone.model.conv1" in out


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="int4"):
        measure(PlainConvNet(), precision="int4")


def test_info_and_model_card_show_the_figures(tmp_path, capsys):
    import asczoo
    from asczoo.testing.tiny import tiny_overrides

    assert main(["info", "resnet18-3d"]) == 0
    assert "DCASE 2024/2025 limits do not hold" in capsys.readouterr().out
    model = asczoo.create_model("resnet18-3d", overrides=tiny_overrides())
    expected = measure(model)
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "## Complexity" in card and f"{expected.macs_per_clip / 1e6:.3f} M MACs per clip" in card


def test_a_custom_op_is_counted_through_its_registered_formula():
    """A plugin op registered with torch.library is opaque to the counter until it gets a formula."""
    from asczoo.analysis.complexity import register_macs_formula

    @torch.library.custom_op("asczoo_test::pair_product", mutates_args=())
    def pair_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b)

    @pair_product.register_fake
    def _(a, b):
        return a.new_empty(a.shape[0], a.shape[1], b.shape[2])

    class UsesOp(nn.Module):
        input_shape = (5, 6)

        def forward(self, x):
            return pair_product(x, x.transpose(1, 2))

    before = measure(UsesOp()).macs_per_clip

    @register_macs_formula(torch.ops.asczoo_test.pair_product)
    def _macs(a, b, out_val=None, **_):  # the op's own arguments
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]

    after = measure(UsesOp()).macs_per_clip
    assert (before, after) == (0, 5 * 6 * 5)
