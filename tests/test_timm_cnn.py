"""The ``timm-cnn`` backbone plugin: any timm CNN with features_only, placements, pretrained weights
through timm's Hub download (offline, from a seeded cache), and the refusals (issue 17, item 1)."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from model_fixtures import seed_hub_cache

import asczoo
from asczoo.cli import main
from asczoo.testing import tiny_overrides
from asczoo_plugins.timm_cnn import BackboneRefused, TimmCNN

NEW = ["efficientnet-b0", "mobilenetv3-large-100", "regnety-008", "convnext-atto"]
TINY = tiny_overrides()["backbone"]


def test_registry_has_each_backbone_plain_and_with_atresn():
    names = set(asczoo.list_models())
    for slug in NEW:
        assert f"{slug}-3d" in names and f"atresn-net-{slug}" in names


def test_list_shows_the_new_models_with_parameters(capsys):
    assert main(["list", "*convnext-atto*", "--params"]) == 0
    out = capsys.readouterr().out
    built = asczoo.create_model("convnext-atto-3d").parameter_counts()["total"]
    assert "atresn-net-convnext-atto" in out and f"{built / 1e6:.2f} M" in out


def test_placements_by_paper_name_stage_index_and_timm_module_name():
    net = TimmCNN("efficientnet_b0", **TINY)
    # stage index: feature_info order (efficientnet lists blocks.0, 1, 2, 4, 6)
    assert net.block_path("stage4") == "model.blocks.4"
    # timm's module name
    assert net.block_path("blocks.4.1") == "model.blocks.4.1"
    # the paper's name: block 1 of the stride-16 stage
    assert net.block_path("res3_1") == "model.blocks.4.0"
    assert net.block_channels("stage4") == net.stage_channels[3]
    convnext = TimmCNN("convnext_atto", **TINY)
    assert convnext.block_path("stages.2") == "model.stages_2"  # timm's name inside features_only's flat wrapper
    assert convnext.block_path("res2_2") == "model.stages_1.blocks.1"
    for bad, msg in [("stage9", "does not exist"), ("res4_9", "has 2 blocks"), ("blocks.99", "not a module")]:
        with pytest.raises(ValueError, match=msg):
            convnext.block_path(bad) if bad != "blocks.99" else net.block_path(bad)


def test_recipe_places_blocks_by_stage_index_and_module_name():
    model = asczoo.create_model("atresn-net-convnext-atto", overrides=tiny_overrides(
        relation={"placement": ["stage3", "stages_1_blocks_0"]}))
    assert set(model.relations) == {"stage3", "stages_1_blocks_0"}
    assert model.backbone.block_path("stages_1_blocks_0") == "model.stages_1.blocks.0"
    x = torch.randn(2, *model.input_shape)
    assert model(x).shape == (2, 10)


def test_in_chans_follows_the_frontend():
    net = TimmCNN("regnety_008", in_chans=5, **TINY)
    assert net(torch.randn(2, 5, 32, 24)).shape[1] == net.num_features


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="no model named 'efficientnet_b00'.*did you mean.*efficientnet_b0"):
        TimmCNN("efficientnet_b00")


def test_attention_with_fixed_token_count_is_refused_with_the_reason():
    with pytest.raises(BackboneRefused, match="position embeddings for a fixed token count"):
        TimmCNN("vit_tiny_patch16_224")


@pytest.mark.parametrize("arch", ["mixer_s32_224", "swin_tiny_patch4_window7_224"])
def test_networks_with_a_fixed_input_size_are_refused_with_the_reason(arch):
    with pytest.raises(BackboneRefused, match=f"{arch} cannot run on a 128 x 128 map.*fix their input size"):
        TimmCNN(arch)


def test_recipes_cannot_make_timm_load_files():
    with pytest.raises(ValueError, match="checkpoint_path"):
        TimmCNN("convnext_atto", checkpoint_path="/tmp/x.pth")


def test_pretrained_weights_come_from_timms_hub_download_offline(hf_cache, tmp_path):  # noqa: F811
    reference = timm.create_model("convnext_atto")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    repo = timm.models.get_pretrained_cfg("convnext_atto").hf_hub_id
    seed_hub_cache(hf_cache, repo, folder, "0" * 40)
    net = TimmCNN("convnext_atto", pretrained=True)
    weight = net.model.get_submodule(net.block_path("stages.2")[len("model."):]).blocks[0].conv_dw.weight
    torch.testing.assert_close(weight, state["stages.2.blocks.0.conv_dw.weight"], rtol=0, atol=0)
    # and through a recipe override
    model = asczoo.create_model("convnext-atto-3d", overrides={"backbone": {"pretrained": True}})
    torch.testing.assert_close(model.backbone.model.stem_0.weight, state["stem.0.weight"], rtol=0, atol=0)


def test_pretrained_offline_and_uncached_says_what_to_do(hf_cache):  # noqa: F811
    with pytest.raises(RuntimeError, match="not in the Hugging Face cache.*HF_HUB_OFFLINE.*huggingface-cli download timm/"):
        TimmCNN("convnext_atto", pretrained=True)


def test_pretrained_needs_the_default_widths():
    with pytest.raises(ValueError, match="default widths"):
        TimmCNN("efficientnet_b0", pretrained=True, **TINY)


def test_recipe_placements_with_dots_are_refused_at_read_time():
    with pytest.raises(asczoo.RecipeError, match="blocks_4_1"):
        asczoo.create_model("atresn-net-efficientnet-b0", overrides={"relation": {"placement": ["blocks.4.1"]}})
