"""Tests for models/deform_conv.py against a literal per-pixel, per-tap numpy DCNv2 reference.

The reference follows FOCSAM.md section 5.5.2 word for word (validity test -1 < p < size, each
out-of-map corner contributes 0). Float64 runs must agree to 1e-10; float32 runs to 1e-5 (the
grid normalisation round trip of grid_sample costs a few ulps of position).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from focsam_onnx.models.deform_conv import DeformLayer, modulated_deform_conv3x3

N, C_IN, C_OUT, H, W = 2, 3, 4, 6, 5


def reference_dcn(x: np.ndarray, offset: np.ndarray, mask: np.ndarray,
                  weight: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), offset (N, 18, H, W) as (dy, dx) per tap, mask (N, 9, H, W),
    weight (O, C, 3, 3) -> (N, O, H, W), float64, one output pixel and tap at a time."""
    n_img, _, height, width = x.shape
    out = np.zeros((n_img, weight.shape[0], height, width), dtype=np.float64)
    for n in range(n_img):
        for i in range(height):
            for j in range(width):
                for a in range(3):
                    for b in range(3):
                        k = 3 * a + b
                        py = i - 1 + a + float(offset[n, 2 * k, i, j])
                        px = j - 1 + b + float(offset[n, 2 * k + 1, i, j])
                        value = _bilinear_zero_outside(x[n], py, px)
                        out[n, :, i, j] += weight[:, :, a, b] @ (float(mask[n, k, i, j]) * value)
    return out


def _bilinear_zero_outside(img: np.ndarray, py: float, px: float) -> np.ndarray:
    """Sample img (C, H, W) at (py, px): 0 unless -1 < p < size, out-of-map corners count 0."""
    _, height, width = img.shape
    value = np.zeros(img.shape[0], dtype=np.float64)
    if not (-1 < py < height and -1 < px < width):
        return value
    y0, x0 = math.floor(py), math.floor(px)
    ly, lx = py - y0, px - x0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * img[:, yy, xx].astype(np.float64)
    return value


def _base_positions() -> tuple[np.ndarray, np.ndarray]:
    """Undeformed positions (1, 9, H, W): rows i - 1 + a and columns j - 1 + b for tap 3a + b."""
    taps = np.arange(9)
    rows = np.arange(H)[None, :, None] - 1 + (taps // 3)[:, None, None]
    cols = np.arange(W)[None, None, :] - 1 + (taps % 3)[:, None, None]
    return np.broadcast_to(rows, (9, H, W))[None], np.broadcast_to(cols, (9, H, W))[None]


def _offsets_for_targets(py: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Offsets (N, 18, H, W) that move every tap exactly to the positions py, px (N, 9, H, W)."""
    rows, cols = _base_positions()
    offset = np.empty((py.shape[0], 18, H, W))
    offset[:, 0::2] = py - rows
    offset[:, 1::2] = px - cols
    return offset


def _offset_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shape = (N, 9, H, W)
    # Exact border positions: -1 and size give 0, just inside gives a partial sample.
    py_choices = np.array([-1.0, H, -0.5, H - 0.5, 0.0, H - 1.0, -1.25, H + 0.25, 2.75])
    px_choices = np.array([-1.0, W, -0.5, W - 0.5, 0.0, W - 1.0, -1.25, W + 0.25, 1.5])
    border = _offsets_for_targets(rng.choice(py_choices, shape), rng.choice(px_choices, shape))
    return {
        "zero": np.zeros((N, 18, H, W)),
        "fractional_out_of_window": rng.uniform(-3.0, 3.0, (N, 18, H, W)),
        "integer": rng.integers(-3, 4, (N, 18, H, W)).astype(np.float64),
        "exact_border_positions": border,
    }


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "x": rng.normal(size=(N, C_IN, H, W)),
        "mask": rng.uniform(0.0, 1.0, (N, 9, H, W)),
        "weight": rng.normal(size=(C_OUT, C_IN, 3, 3)),
        **{f"offset_{k}": v for k, v in _offset_cases(rng).items()},
    }


CASES = ["zero", "fractional_out_of_window", "integer", "exact_border_positions"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_literal_reference(data: dict[str, np.ndarray], case: str,
                                   dtype: torch.dtype, tol: float) -> None:
    offset = data[f"offset_{case}"]
    expected = reference_dcn(data["x"], offset, data["mask"], data["weight"])
    args = [torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
            for a in (data["x"], offset, data["mask"], data["weight"])]
    got = modulated_deform_conv3x3(*args).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_zero_offsets_with_unit_mask_is_a_plain_conv(data: dict[str, np.ndarray]) -> None:
    x = torch.from_numpy(data["x"])
    weight = torch.from_numpy(data["weight"])
    got = modulated_deform_conv3x3(x, torch.zeros(N, 18, H, W), torch.ones(N, 9, H, W).double(),
                                   weight)
    expected = torch.nn.functional.conv2d(x, weight, padding=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_samples_at_or_beyond_minus_one_and_size_are_zero() -> None:
    x = torch.ones(1, 1, H, W, dtype=torch.float64)
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1] = 1.0  # only the centre tap (k = 4) reaches the output
    offset = torch.zeros(1, 18, H, W, dtype=torch.float64)
    rows = torch.arange(H, dtype=torch.float64).view(H, 1)
    offset[0, 8] = -1.0 - rows  # centre tap's dy: every row samples at py = -1 exactly
    mask = torch.ones(1, 9, H, W, dtype=torch.float64)
    assert modulated_deform_conv3x3(x, offset, mask, weight).abs().max().item() == 0.0
    offset[0, 8] = H - rows  # py = H exactly
    assert modulated_deform_conv3x3(x, offset, mask, weight).abs().max().item() == 0.0
    offset[0, 8] = -0.75 - rows  # py = -0.75: only row 0 contributes, with weight 0.25
    got = modulated_deform_conv3x3(x, offset, mask, weight)
    torch.testing.assert_close(got, torch.full_like(got, 0.25), rtol=0, atol=1e-12)


def test_deform_layer_splits_offsets_and_sigmoid_mask(data: dict[str, np.ndarray]) -> None:
    torch.manual_seed(0)
    layer = DeformLayer(C_IN, C_OUT).double()
    torch.nn.init.normal_(layer.dcn_offset.weight, std=0.5)  # offsets of a few pixels
    x = torch.from_numpy(data["x"])
    with torch.no_grad():
        got = layer(x).numpy()
        offset_mask = layer.dcn_offset(x).numpy()
    mask = 1.0 / (1.0 + np.exp(-offset_mask[:, 18:]))
    weight = layer.dcn.weight.detach().numpy()
    expected = reference_dcn(data["x"], offset_mask[:, :18], mask, weight)
    assert np.abs(offset_mask[:, :18]).max() > 1.0  # the offsets really move samples
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_bad_offset_channels_raise() -> None:
    x = torch.zeros(1, C_IN, H, W)
    with pytest.raises(ValueError, match="offset must be"):
        modulated_deform_conv3x3(x, torch.zeros(1, 27, H, W), torch.zeros(1, 9, H, W),
                                 torch.zeros(C_OUT, C_IN, 3, 3))
