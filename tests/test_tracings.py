"""Hand-computed checks of the LV tracing helpers (polygon rule, discs, EF, background)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from protoef.data.tracings import background_mask, disc_volume, ejection_fraction, trace_mask


def test_trace_mask_rectangle_with_rounding():
    # Long axis, then 3 chords at y≈2, 3, 4 from x≈1 to x≈4 (fractional: vertices are
    # rounded first). The polygon is X1 of rows 1.. then X2 reversed: a 4x3 rectangle.
    # Without the reversal it would be a bow-tie; with x/y swapped it would be 3 wide.
    x1, y1 = [2.5, 1.2, 0.6, 1.4], [1.0, 2.3, 3.0, 3.9]
    x2, y2 = [2.5, 4.4, 3.6, 4.2], [5.0, 1.6, 3.2, 4.4]
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=bool)
    mask = trace_mask(x1, y1, x2, y2, 6, 7)
    assert mask.dtype == bool and mask.shape == (6, 7)
    np.testing.assert_array_equal(mask, expected)


def test_trace_mask_triangle_ignores_long_axis_row():
    # Chords widening downwards from an apex at (3, 1): a triangle, boundary included.
    # The long-axis row (3, 0) -> (3, 5) lies outside the triangle and must not be drawn.
    x1, y1 = [3, 3, 2, 1, 0], [0, 1, 2, 3, 4]
    x2, y2 = [3, 3, 4, 5, 6], [5, 1, 2, 3, 4]
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=bool)
    np.testing.assert_array_equal(trace_mask(x1, y1, x2, y2, 6, 7), expected)


def test_trace_mask_clips_to_frame():
    mask = trace_mask([0, -5, -5], [0, -5, 10], [0, 20, 20], [0, -5, 10], 4, 4)
    assert mask.shape == (4, 4) and mask.all()


def test_trace_mask_rejects_bad_input():
    with pytest.raises(ValueError):
        trace_mask([0], [0], [1], [1], 4, 4)  # long axis only
    with pytest.raises(ValueError):
        trace_mask([0, 1], [0, 1], [1, 2], [1], 4, 4)  # ragged


def test_disc_volume_cylinder():
    # Axis of length 10, 20 chords of diameter 4: a cylinder, π/4 · 4² · 10 = 40π.
    n = 20
    x1 = np.r_[0.0, np.full(n, -2.0)]
    x2 = np.r_[0.0, np.full(n, 2.0)]
    y = np.r_[0.0, np.linspace(0.5, 9.5, n)]
    y2 = y.copy()
    y2[0] = 10.0
    assert disc_volume(x1, y, x2, y2) == pytest.approx(40 * np.pi)


def test_disc_volume_two_discs_and_tilt():
    # Axis length 6 (a 3-4-5 style tilt: (0,0)->(3.6,4.8)), chords of length 2 and 4:
    # discs of height 3, V = π/4 · (2² + 4²) · 3 = 15π. Chord orientation is irrelevant.
    x1, y1 = [0.0, 10.0, 20.0], [0.0, 10.0, 20.0]
    x2, y2 = [3.6, 10.0, 20.0 + 4 * 0.8], [4.8, 12.0, 20.0 - 4 * 0.6]
    assert disc_volume(x1, y1, x2, y2) == pytest.approx(15 * np.pi)


def test_ejection_fraction():
    assert ejection_fraction(100.0, 40.0) == pytest.approx(60.0)
    assert ejection_fraction(120.0, 120.0) == 0.0
    # Scale-free: volumes in pixel³ give the same EF as in mL.
    assert ejection_fraction(8.0 * 50, 8.0 * 20) == pytest.approx(60.0)
    with pytest.raises(ValueError):
        ejection_fraction(0.0, 1.0)


def test_background_mask_hand_computed():
    # A one-pixel LV at (7, 7) of a 14x14 frame, feature size 14x14 (no resampling):
    # the 5x5 dilation makes rows/cols 5..9 LV, so background is 0 there, 1 elsewhere.
    # The 3x3 Gaussian (σ = 2) has 1-D weights [a, b, a], a = e^(-1/8) / (1 + 2 e^(-1/8)).
    lv = np.zeros((14, 14), dtype=bool)
    lv[7, 7] = True
    background = background_mask(lv, (14, 14))
    assert isinstance(background, torch.Tensor) and background.shape == (14, 14)
    a = np.exp(-1 / 8) / (1 + 2 * np.exp(-1 / 8))
    assert background[7, 7].item() == pytest.approx(0.0, abs=1e-6)  # deep inside
    assert background[7, 10].item() == pytest.approx(1 - a, abs=1e-5)  # left neighbour is LV
    assert background[10, 10].item() == pytest.approx(1 - a * a, abs=1e-5)  # corner neighbour
    assert background[7, 12].item() == pytest.approx(1.0, abs=1e-6)  # all neighbours background
    assert background[0, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_background_mask_frame_to_feature_size():
    yy, xx = np.mgrid[0:112, 0:112]
    lv = np.hypot(yy - 56, xx - 56) < 20  # a disc in the middle of the frame
    background = background_mask(lv, (14, 14)).numpy()
    assert background.shape == (14, 14)
    assert background.min() >= 0.0 and background.max() <= 1.0 + 1e-6
    assert background[6:8, 6:8].max() < 0.01  # inside the (dilated) LV
    assert background[0, 0] > 0.99 and background[13, 13] > 0.99  # far outside
    # Accepts torch masks too, and a non-square feature map.
    assert background_mask(torch.as_tensor(lv), (7, 9)).shape == (7, 9)
