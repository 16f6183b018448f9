"""Batch augmentation: seeded random affine warps, vectorised over the batch."""

from __future__ import annotations

import math

import torch

from mnist_pipeline.core.params import AugmentParams
from mnist_pipeline.data.augment import BACKGROUND, augment, random_affine
from mnist_pipeline.data.dataset import normalise

STRONG = AugmentParams(enabled=True, rotate_deg=30, scale=0.2, shear_deg=10, translate_px=3)


def digits(n: int = 16) -> torch.Tensor:
    """Normalised [n, 1, 28, 28] images of a bar of varying length (white on black)."""
    raw = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        raw[i, 6 : 12 + i % 10, 12:16] = 255
    return normalise(raw)


def test_the_same_seed_gives_the_same_warps_and_another_seed_others() -> None:
    batch = digits()
    first = augment(batch, STRONG, torch.Generator().manual_seed(5))
    again = augment(batch, STRONG, torch.Generator().manual_seed(5))
    other = augment(batch, STRONG, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == batch.shape and first.dtype == batch.dtype
    assert not torch.equal(first, batch)  # the digits were warped


def test_each_copy_of_one_image_gets_its_own_warp() -> None:
    """A batch of 16 copies of one digit: 16 different warps, 16 different results."""
    copies = digits(1).repeat(16, 1, 1, 1)
    theta = random_affine(16, STRONG, torch.Generator().manual_seed(3))
    assert len(torch.unique(theta.flatten(1), dim=0)) == 16
    warped = augment(copies, STRONG, torch.Generator().manual_seed(3))
    assert len(torch.unique(warped.flatten(1), dim=0)) == 16


def test_no_strength_is_the_identity_and_background_stays_black() -> None:
    batch = digits()
    none = AugmentParams(enabled=True, rotate_deg=0, scale=0, shear_deg=0, translate_px=0)
    same = augment(batch, none, torch.Generator().manual_seed(0))
    assert torch.allclose(same, batch, atol=1e-5)
    blank = torch.full((4, 1, 28, 28), BACKGROUND)
    assert torch.allclose(augment(blank, STRONG, torch.Generator()), blank, atol=1e-5)


def test_warps_stay_within_their_bounds() -> None:
    theta = random_affine(2000, STRONG, torch.Generator().manual_seed(1))
    linear = theta[:, :, :2]
    # det = 1 / scale^2 (rotation and shear preserve area): scale within 1 +- 0.2.
    scale = 1 / linear.det().sqrt()
    assert scale.min() >= 0.8 - 1e-9 and scale.max() <= 1.2 + 1e-9
    assert scale.max() - scale.min() > 0.3  # the range is used, not a constant
    shift_px = theta[:, :, 2] * 14  # x then y, each on its own: both ways, full range
    for axis in shift_px.T:
        assert axis.abs().max() <= 3 + 1e-9 and axis.max() > 2.5 and axis.min() < -2.5
    assert abs(float(torch.corrcoef(shift_px.T)[0, 1])) < 0.1  # drawn apart, not tied
    # The first column is the rotated x axis: its angle is the rotation.
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= 30 + 1e-6 and angle.max() > 25 and angle.min() < -25
    # The second column leans on the first by the shear: its component along the first.
    first, second = linear[:, :, 0], linear[:, :, 1]
    lean = (first * second).sum(1) / (first * first).sum(1)
    shear = torch.rad2deg(torch.atan(lean))
    assert shear.abs().max() <= STRONG.shear_deg + 1e-6
    assert shear.max() > 0.8 * STRONG.shear_deg and shear.min() < -0.8 * STRONG.shear_deg


def test_a_bar_is_rotated_not_just_moved() -> None:
    rotate = AugmentParams(enabled=True, rotate_deg=45, scale=0, shear_deg=0, translate_px=0)
    raw = torch.zeros(1, 28, 28, dtype=torch.uint8)
    raw[0, 6:22, 13:15] = 255  # a long upright bar
    bar = normalise(raw)
    warped = augment(bar.repeat(64, 1, 1, 1), rotate, torch.Generator().manual_seed(2))
    ink = (warped - BACKGROUND).clamp(min=0)[:, 0]
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = ink.sum(dim=(1, 2))
    cy = (ink * rows).sum(dim=(1, 2)) / mass
    cx = (ink * cols).sum(dim=(1, 2)) / mass
    cov_xy = (ink * (rows - cy[:, None, None]) * (cols - cx[:, None, None])).sum(dim=(1, 2))
    tilted = (cov_xy.abs() / mass > 2.0).float().mean()  # an upright bar has cov_xy ~ 0
    assert tilted > 0.5 and math.isclose(float(mass.mean()), 16 * 2 * float(ink.max()), rel_tol=0.3)


def test_the_warp_is_affine_grid_and_grid_sample_of_the_drawn_matrices() -> None:
    """The separable grid is `affine_grid`'s, for batches of any size and both float types."""
    import torch.nn.functional as F

    for n, dtype in ((1, torch.float32), (37, torch.float32), (128, torch.float64)):
        batch = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(n)).to(dtype)
        theta = random_affine(n, STRONG, torch.Generator().manual_seed(n)).to(dtype)
        grid = F.affine_grid(theta, [n, 1, 28, 28], align_corners=False)
        expected = F.grid_sample(batch, grid, padding_mode="border", align_corners=False)
        warped = augment(batch, STRONG, torch.Generator().manual_seed(n))
        assert warped.dtype == dtype and torch.allclose(warped, expected, atol=1e-5), n
