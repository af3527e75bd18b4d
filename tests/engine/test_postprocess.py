"""Logits -> image mask, with torch doing upstream's steps (spec §1.5) as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focsam_onnx.engine import postprocess
from focsam_onnx.engine.postprocess import as_low_res_grid, logits_to_mask, upscale_logits
from focsam_onnx.engine.preprocess import ImageGeometry


@pytest.fixture(autouse=True)
def torch_two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def speckled_logits(seed: int) -> np.ndarray:
    """A smooth blob plus the decoder-like high-frequency speckle, many values near 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    centre = rng.uniform(0.3, 0.7, 2)
    blob = 0.3 - ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    speckle = 0.2 * rng.standard_normal((256, 256))
    return (blob + speckle).astype(np.float32)[None, None]


def torch_upstream_logits(low_res: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """Upstream's post-processing, step by step with F.interpolate: (H32, W32) logits."""
    logits = torch.from_numpy(low_res)
    logits = F.interpolate(logits, size=(1024, 1024), mode="bilinear", align_corners=False)
    logits = logits[..., :geometry.resized_height, :geometry.resized_width]
    logits = F.interpolate(logits, size=geometry.padded_hw, mode="bilinear", align_corners=False)
    return logits[0, 0].numpy()


# (33, 60) and (20, 30) pad to 64x64 and 32x32, small enough for torch's four-tap kernel.
GEOMETRIES = [(427, 640), (300, 450), (470, 360), (480, 640), (1024, 768), (97, 1500),
              (33, 60), (20, 30), (50, 70)]


@pytest.mark.parity
@pytest.mark.parametrize("hw", GEOMETRIES)
def test_upscale_and_mask_match_torch_exactly(hw):
    geometry = ImageGeometry.from_size(*hw)
    low_res = speckled_logits(hw[0] * 7 + hw[1])
    expected = torch_upstream_logits(low_res, geometry)
    logits = upscale_logits(low_res, geometry)
    assert logits.shape == geometry.padded_hw and logits.dtype == np.float32
    np.testing.assert_array_equal(logits, expected)
    mask = logits_to_mask(low_res, geometry)
    assert mask.shape == hw and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected[:hw[0], :hw[1]] > 0)


def test_threshold_is_strict():
    geometry = ImageGeometry.from_size(64, 64)
    zeros = np.zeros((1, 1, 256, 256), np.float32)
    assert not logits_to_mask(zeros, geometry).any()
    assert logits_to_mask(zeros + np.float32(1e-30), geometry).all()


def test_mask_is_the_top_left_of_the_padded_canvas():
    # Positive only in the low-res cells that map to the pad32 margin of a 300x450 image:
    # nothing of it may show up in the image crop, only in the padded logits.
    geometry = ImageGeometry.from_size(300, 450)
    low_res = np.full((1, 1, 256, 256), -1.0, np.float32)
    low_res[..., 165:, :] = 1.0  # rows >= 660 of 1024, i.e. >= 309 of the 320-row pad32 canvas
    assert not logits_to_mask(low_res, geometry).any()
    assert (upscale_logits(low_res, geometry)[310:] > 0).all()


def test_rejects_wrong_logit_shape():
    with pytest.raises(ValueError, match=r"\(1, 1, 128, 128\)"):
        logits_to_mask(np.zeros((1, 1, 128, 128), np.float32), ImageGeometry.from_size(8, 8))


def exact_mask(low_res: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """The exact kernel's mask: the whole (H, W) logit map, then the threshold."""
    return upscale_logits(low_res, geometry)[:geometry.height, :geometry.width] > 0


def signed_cases(seed: int) -> dict[str, np.ndarray]:
    """Random logits and the edge cases of the sign test, (1, 1, 256, 256) float32 each."""
    rng = np.random.default_rng(seed)
    noise = (0.2 * rng.standard_normal((1, 1, 256, 256))).astype(np.float32)
    border = np.full_like(noise, -1.0)
    border[..., :40, :] = 2.0  # touches the top edge and both sides
    border[..., :, 200:] = 3.0  # the right edge of the canvas (the pad32 margin's side)
    tiny = np.zeros_like(noise)  # exact zeros and values far below any relative margin
    tiny[..., 100:, 50:] = 1e-30
    tiny[..., :20, :] = -1e-38  # subnormal
    steps = np.round(noise * 4) / 4  # plateaus of exact zeros beside +-0.25
    return {"random": noise, "all positive": np.abs(noise) + 1e-3,
            "all negative": -np.abs(noise) - 1e-3, "border": border, "tiny": tiny,
            "steps": steps, "speckled": speckled_logits(seed), "huge": noise * 1e38}


ODD_SIZES = [(480, 640), (1, 1), (1, 1500), (31, 7), (33, 60), (513, 1025), (1023, 1)]


@pytest.mark.parametrize("hw", ODD_SIZES)
def test_mask_is_the_exact_kernels_bit_for_bit(hw):
    geometry = ImageGeometry.from_size(*hw)
    for name, low_res in signed_cases(hw[0] + 3 * hw[1]).items():
        np.testing.assert_array_equal(logits_to_mask(low_res, geometry),
                                      exact_mask(low_res, geometry), err_msg=name)


def test_mask_of_all_positive_and_all_negative_logits():
    geometry = ImageGeometry.from_size(37, 91)
    cases = signed_cases(0)
    assert logits_to_mask(cases["all positive"], geometry).all()
    assert not logits_to_mask(cases["all negative"], geometry).any()


def test_rows_near_zero_are_recomputed_exactly():
    # Exact zeros fall inside the margin, so these rows take the exact kernel: its rows alone
    # must be the exact kernel's full map's, value for value.
    geometry = ImageGeometry.from_size(300, 450)
    low_res = signed_cases(1)["steps"]
    rows = np.array([0, 1, 7, 150, 298, 299])
    np.testing.assert_array_equal(
        postprocess._exact_rows(as_low_res_grid(low_res), geometry, rows),
        upscale_logits(low_res, geometry)[rows, :geometry.width])


def test_non_finite_logits_take_the_exact_kernel():
    geometry = ImageGeometry.from_size(64, 80)
    low_res = signed_cases(2)["random"]
    low_res[..., 10, 10] = np.nan
    low_res[..., 200, 30] = np.inf
    np.testing.assert_array_equal(logits_to_mask(low_res, geometry),
                                  exact_mask(low_res, geometry))
