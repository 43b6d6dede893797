"""The inflation invariant (docs/method.md section 4) and the stage 1 -> stage 2 initialisation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import asczoo
from asczoo.testing import tiny_overrides


@pytest.mark.parametrize("arch", ["resnet18", "preact18"])
@pytest.mark.parametrize("mode", ["folded", "conv3d"])
def test_3d_model_initialised_from_segment_model_gives_its_logits(arch, mode):
    torch.manual_seed(1)
    segment = asczoo.create_model(f"{arch}-segments", overrides=tiny_overrides())
    # train-mode steps give non-trivial batch-norm statistics before freezing
    with torch.no_grad():
        for _ in range(2):
            segment(torch.randn(4, *segment.input_shape))
    segment.eval()
    model3d = asczoo.create_model(
        f"{arch}-3d", overrides=tiny_overrides(inflator={"mode": mode}), init_from=segment
    ).eval()
    x = torch.randn(3, *segment.input_shape)
    torch.testing.assert_close(model3d(x), segment(x), atol=1e-5, rtol=0)
    # and the 3D network equals the 2D network on each segment + average over (N, F, T)
    per_segment = torch.stack([segment.backbone(x[:, n]) for n in range(x.shape[1])], dim=1)
    torch.testing.assert_close(model3d.forward_features(x), per_segment, atol=1e-5, rtol=0)


def test_conv3d_and_folded_paths_agree_and_use_real_3d_layers():
    torch.manual_seed(2)
    folded = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(inflator={"mode": "folded"})).eval()
    real3d = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(inflator={"mode": "conv3d"}), init_from=folded).eval()
    assert isinstance(real3d.backbone.model.conv1, torch.nn.Conv3d)
    assert real3d.backbone.model.conv1.kernel_size == (1, 7, 7)
    assert isinstance(real3d.backbone.model.layer1[0].bn1, torch.nn.BatchNorm3d)
    # parameter names are the 2D ones, counts identical (no parameter added)
    assert folded.state_dict().keys() == real3d.state_dict().keys()
    assert folded.parameter_counts() == real3d.parameter_counts()
    x = torch.randn(2, *folded.input_shape)
    torch.testing.assert_close(real3d(x), folded(x), atol=1e-5, rtol=0)


def test_temporal_kernel_i3d_initialisation():
    torch.manual_seed(3)
    folded = asczoo.create_model("resnet18-3d", overrides=tiny_overrides()).eval()
    centre = asczoo.create_model(
        "resnet18-3d", overrides=tiny_overrides(inflator={"mode": "conv3d", "temporal_kernel": 3, "temporal_init": "centre"}),
        init_from=folded,
    ).eval()
    assert centre.backbone.model.conv1.kernel_size == (3, 7, 7)
    x = torch.randn(2, *folded.input_shape)
    # centre-tap initialisation starts exactly as the 2D network
    torch.testing.assert_close(centre(x), folded(x), atol=1e-5, rtol=0)
    mean = asczoo.create_model(
        "resnet18-3d", overrides=tiny_overrides(inflator={"mode": "conv3d", "temporal_kernel": 3}), init_from=folded
    ).eval()
    # mean initialisation: a sequence of identical segments gives the 2D response in the interior
    # segments (zero padding at the sequence ends differs), so compare on a constant sequence's middle
    same = x[:, :1].repeat(1, folded.input_shape[0], 1, 1, 1)
    f_mean = mean.backbone.model.conv1(mean.layout.enter(same))
    f_2d = folded.backbone.model.conv1(same[:, 0])
    torch.testing.assert_close(f_mean[:, :, 1], f_2d, atol=1e-5, rtol=0)
    assert not torch.allclose(mean(x), folded(x), atol=1e-4)


def test_folded_mode_refuses_a_temporal_kernel():
    with pytest.raises(ValueError, match="temporal_kernel > 1 mixes neighbouring segments"):
        asczoo.create_model("resnet18-3d", overrides=tiny_overrides(inflator={"temporal_kernel": 3}))


def test_init_from_checkpoint_file_and_refusals(tmp_path):
    segment = asczoo.create_model("resnet18-segments", overrides=tiny_overrides()).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in segment.state_dict().items()}, str(path))
    from_file = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), init_from=path).eval()
    from_dir = asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), init_from=tmp_path).eval()
    x = torch.randn(1, *segment.input_shape)
    torch.testing.assert_close(from_file(x), segment(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(from_dir(x), segment(x), atol=1e-5, rtol=0)
    pickle_path = tmp_path / "model.pt"
    pickle_path.write_bytes(b"not read")
    with pytest.raises(ValueError, match="never unpickles"):
        asczoo.create_model("resnet18-3d", overrides=tiny_overrides(), init_from=pickle_path)
    with pytest.raises(ValueError, match="does not fit"):
        asczoo.create_model("preact18-3d", overrides=tiny_overrides(), init_from=segment)
