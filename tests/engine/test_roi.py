"""Refiner ROI (spec §5.1): bbox from logits, 1.4x expansion, token mask, window selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focsam_onnx.engine.roi import (
    Roi,
    bbox_from_logits,
    expand_bbox,
    roi_from_logits,
    selected_windows,
    token_mask,
)

SPEC_VECTORS = [
    ((100, 200, 301, 421), (60, 156, 341, 465)),
    ((0, 0, 10, 10), (0, 0, 12, 12)),
    ((3, 5, 8, 6), (2, 5, 9, 6)),
    ((500, 500, 501, 501), (500, 500, 501, 501)),
    ((1000, 10, 1024, 1024), (995, 0, 1024, 1024)),
    ((37, 211, 88, 390), (27, 175, 98, 426)),
    ((15, 15, 17, 17), (15, 15, 17, 17)),
    ((1, 1, 4, 4), (0, 0, 5, 5)),
]


@pytest.mark.parametrize(("bbox", "expected"), SPEC_VECTORS)
def test_expand_bbox_spec_vectors(bbox, expected):
    assert expand_bbox(bbox) == expected


def test_expand_bbox_ratio_is_height_then_width():
    # r_h = 1.0 keeps up/bottom; r_w = 2.0 doubles the width about xc = 15.
    assert expand_bbox((10, 10, 20, 20), ratio=(1.0, 2.0)) == (5, 10, 25, 20)


def test_expand_bbox_rejects_empty_bbox():
    with pytest.raises(ValueError, match=r"\(5, 0, 5, 10\)"):
        expand_bbox((5, 0, 5, 10))


def test_token_mask_is_the_max_pool_of_the_pixel_roi():
    rng = np.random.default_rng(0)
    for _ in range(50):
        left, right = np.sort(rng.choice(1025, 2, replace=False))
        up, bottom = np.sort(rng.choice(1025, 2, replace=False))
        pixels = np.zeros((1024, 1024), np.float32)
        pixels[up:bottom, left:right] = 1.0
        pooled = pixels.reshape(64, 16, 64, 16).max(axis=(1, 3))
        mask = token_mask((int(left), int(up), int(right), int(bottom)))
        assert mask.shape == (1, 1, 64, 64) and mask.dtype == np.float32
        np.testing.assert_array_equal(mask[0, 0], pooled)


def test_bbox_from_logits_matches_torch_upsample():
    rng = np.random.default_rng(1)
    low_res = np.full((1, 1, 256, 256), -0.5, np.float32)
    low_res[..., 40:57, 100:131] = rng.uniform(0.01, 1.0, (17, 31)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(low_res), size=(1024, 1024), mode="bilinear",
                       align_corners=False)[0, 0].numpy() > 0
    rows, cols = np.nonzero(up)
    expected = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert bbox_from_logits(low_res) == expected


def test_empty_mask_gives_the_whole_canvas():
    roi = roi_from_logits(np.full((1, 1, 256, 256), -1.0, np.float32))
    assert roi.raw_bbox == roi.bbox == (0, 0, 1024, 1024)
    assert roi.token_mask.all()
    assert selected_windows(roi.token_mask).tolist() == list(range(16))


def test_shifted_windows_wrap_around():
    # Shifted window (r, c) covers token rows (16r + 8 ... 16r + 23) mod 64, same for columns,
    # so window 15 holds tokens 56..63 and 0..7 on both axes.
    mask = np.zeros((1, 1, 64, 64), np.float32)
    mask[..., 56:, 56:] = 1.0
    assert selected_windows(mask).tolist() == [15]
    assert selected_windows(mask, shift=8).tolist() == [15]
    mask[..., 0, 0] = 1.0
    assert selected_windows(mask).tolist() == [0, 15]
    assert selected_windows(mask, shift=8).tolist() == [15]
    mask[..., 7, 20] = 1.0  # row 7 wraps to shifted row 3, column 20 is shifted column 0
    assert selected_windows(mask, shift=8).tolist() == [12, 15]
    mask[..., 8, 8] = 1.0
    assert selected_windows(mask, shift=8).tolist() == [0, 12, 15]


@pytest.mark.parametrize("case", ["middle", "border", "tiny", "allneg"])
def test_refiner_roi_matches_golden(load_golden, case):
    data = load_golden(f"refiner_{case}")
    roi = roi_from_logits(data["coarse_logits"])
    assert isinstance(roi, Roi)
    assert roi.raw_bbox == tuple(data["roi_bbox_raw"].tolist())
    assert roi.bbox == tuple(data["roi_bbox"].tolist())
    np.testing.assert_array_equal(roi.token_mask[0, 0], data["roi_mask64"])
    np.testing.assert_array_equal(selected_windows(roi.token_mask), data["block0_windows"])
    np.testing.assert_array_equal(selected_windows(roi.token_mask, shift=8),
                                  data["block1_windows"])


@pytest.mark.parametrize("name", ["session_1", "session_2"])
def test_session_refine_roi_matches_golden(load_golden, name):
    data = load_golden(name)
    roi = roi_from_logits(data["refine_coarse_logits"])
    assert roi.raw_bbox == tuple(data["refine_roi_bbox_raw"].tolist())
    assert roi.bbox == tuple(data["refine_roi_bbox"].tolist())
