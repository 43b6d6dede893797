"""Batch augmentations: left/right swap, mixup, time/frequency masking."""

from __future__ import annotations

import pytest
import torch

import asczoo


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), classes).to(torch.float32)

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(b=6, n=4, f=16, t=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, f, t, generator=g)
    y = one_hot(torch.arange(b) % classes, classes)
    return x, y


def test_lr_swap_swaps_left_and_right_and_keeps_the_difference():
    x, y = batch()
    always = asczoo.create_augmentation("lr-swap", p=1.0)
    out, targets = always(x, y)
    torch.testing.assert_close(out[:, :, 0], x[:, :, 1])
    torch.testing.assert_close(out[:, :, 1], x[:, :, 0])
    torch.testing.assert_close(out[:, :, 2], x[:, :, 2])
    assert targets is y
    never, _ = asczoo.create_augmentation("lr-swap", p=0.0)(x, y)
    torch.testing.assert_close(never, x)
    # per sample: some swapped, some not; each sample entirely one or the other
    torch.manual_seed(0)
    mixed, _ = asczoo.create_augmentation("lr-swap", p=0.5)(*batch(b=64))
    x64, _ = batch(b=64)
    swapped = [bool(torch.equal(mixed[i, :, 0], x64[i, :, 1])) for i in range(64)]
    kept = [bool(torch.equal(mixed[i], x64[i])) for i in range(64)]
    assert all(s != k for s, k in zip(swapped, kept)) and 10 < sum(swapped) < 54
    per_batch, _ = asczoo.create_augmentation("lr-swap", p=0.5, per="batch", seed=3)(x64, one_hot(torch.zeros(64), 3))
    assert torch.equal(per_batch, x64) or torch.equal(per_batch, x64[:, :, [1, 0, 2]])


def test_mixup_blends_features_and_targets_with_one_lambda():
    x, y = batch()
    out, targets = asczoo.create_augmentation("mixup", alpha=0.4, seed=1)(x, y)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    # recover lambda and the partner of each sample from the features
    lam, partner = None, []
    for i in range(6):
        best = None
        for j in range(6):
            # out_i = l x_i + (1 - l) x_j, solve for l by least squares
            d = (x[i] - x[j]).flatten()
            if d.norm() == 0:
                l_ij = torch.tensor(1.0)
            else:
                l_ij = ((out[i] - x[j]).flatten() @ d) / (d @ d)
            err = (out[i] - (l_ij * x[i] + (1 - l_ij) * x[j])).abs().max()
            if best is None or err < best[0]:
                best = (err, j, l_ij)
        assert best[0] < 1e-4
        partner.append(best[1])
        lam = best[2] if lam is None else lam
        if best[1] != i:
            torch.testing.assert_close(best[2], lam, atol=1e-4, rtol=1e-4)  # one lambda for the batch
        torch.testing.assert_close(targets[i], best[2] * y[i] + (1 - best[2]) * y[best[1]], atol=1e-4, rtol=1e-4)
    assert 0 <= float(lam) <= 1
    # seeded: repeatable; p=0: identity
    again, _ = asczoo.create_augmentation("mixup", alpha=0.4, seed=1)(x, y)
    torch.testing.assert_close(again, out)
    same, same_t = asczoo.create_augmentation("mixup", p=0.0)(x, y)
    assert same is x and same_t is y


def test_mixup_alpha_controls_lambda():
    """With x0 = 0 and x1 = 1, a batch mixed with its other sample has lambda as its second value."""
    x = torch.stack([torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)])
    y = one_hot(torch.tensor([0, 1]), 2)

    def lambdas(alpha):
        aug = asczoo.create_augmentation("mixup", alpha=alpha, seed=11)
        draws = []
        for _ in range(150):
            out, _ = aug(x, y)
            if out[0].max() > 0:  # the two samples were paired with each other
                draws.append(float(out[1].mean()))
        return draws

    spread = lambda v: sum(abs(a - 0.5) for a in v) / len(v)  # noqa: E731
    small, large = lambdas(0.05), lambdas(20.0)
    assert len(small) > 20 and len(large) > 20
    assert spread(small) > 0.3 and spread(large) < 0.1
    with pytest.raises(ValueError, match="alpha"):
        asczoo.create_augmentation("mixup", alpha=0.0)


def test_spec_mask_masks_bands_and_frames_with_the_sample_mean():
    x, y = batch(b=4, n=3, f=32, t=20)
    x = x + 5.0  # a mean far from zero, so the fill is visible
    aug = asczoo.create_augmentation("spec-mask", freq_masks=1, freq_width=8, time_masks=1, time_width=5, seed=2)
    out, targets = aug(x, y)
    assert targets is y
    changed = out != x  # (B, N, 3, F, T)
    mean = x.mean(dim=(1, 4), keepdim=True).expand_as(x)
    torch.testing.assert_close(out[changed], mean[changed])
    for b in range(4):
        bands = changed[b].all(dim=(0, 1, 3))  # bands masked everywhere: the frequency mask
        assert bands.sum() <= 8
        if bands.any():
            idx = torch.nonzero(bands).flatten()
            assert idx.max() - idx.min() + 1 == len(idx)  # one contiguous band
        for n in range(3):  # time masks differ between segments but are the same for every channel
            frames = changed[b, n][:, ~bands].all(dim=(0, 1))
            assert frames.sum() <= 5
    assert changed.any()
    zero = asczoo.create_augmentation("spec-mask", fill="zero", seed=2)(x, y)[0]
    assert (zero[zero != x] == 0).all()
    untouched, _ = asczoo.create_augmentation("spec-mask", p=0.0)(x, y)
    torch.testing.assert_close(untouched, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentations_run_on_the_gpu():
    x, y = batch()
    x, y = x.cuda(), y.cuda()
    for name in ("lr-swap", "mixup", "spec-mask"):
        out, targets = asczoo.create_augmentation(name, seed=0)(x, y)
        assert out.device.type == "cuda" and targets.device.type == "cuda"
