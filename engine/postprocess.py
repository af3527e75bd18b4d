"""Decoder low-res logits back to image pixels: upsample, crop, resize, threshold (spec §1.5).

The mask needs only the sign of each upsampled logit, so `logits_to_mask` first computes the
two resizes at once, from their composed weights: 3 low-res cells per axis and pixel, in
float32. That sum and the exact kernel (`resize.py`, torch's arithmetic) combine the same 9
inputs with the same weights and differ only by a few float32 roundings, far less than
`SIGN_MARGIN` times the largest logit; a pixel closer to 0 than that margin could change sign,
and its row is recomputed with the exact kernel. The mask is therefore the exact kernel's, bit
for bit, at a fraction of its cost.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from focsam_onnx.config import IMAGE_SIZE
from focsam_onnx.config import LOW_RES_MASK as LOW_RES
from focsam_onnx.engine.preprocess import ImageGeometry
from focsam_onnx.engine.resize import (
    AxisTable,
    axis_table,
    resize_bilinear_cropped,
    resize_with_tables,
)

# The exact kernel's result and the composed sum differ by about a dozen float32 roundings of
# values bounded by the largest |logit| (< 2**-20 of it); 2**-16 leaves a 16x margin.
SIGN_MARGIN = 2.0**-16
# Rounding of subnormal results is absolute, not relative: this covers it.
ABSOLUTE_MARGIN = 2.0**-120
# Beyond this the products might overflow: such logits take the exact kernel.
LARGEST_LOGIT = 2.0**100
MASK_BAND_ROWS = 128  # output rows per pass: float32 temporaries of 128 x W
TAPS = 3  # low-res cells per axis that one output pixel reads


def as_low_res_grid(low_res: np.ndarray) -> np.ndarray:
    """(1, 1, 256, 256) (or (256, 256)) logits -> a (256, 256) float32 view or copy."""
    low_res = np.asarray(low_res)
    if low_res.shape not in ((1, 1, LOW_RES, LOW_RES), (LOW_RES, LOW_RES)):
        raise ValueError(f"expected low-res logits of shape (1, 1, {LOW_RES}, {LOW_RES}), "
                         f"got {low_res.shape}")
    return low_res.reshape(LOW_RES, LOW_RES).astype(np.float32, copy=False)


def _padded_logits(low_res: np.ndarray, geometry: ImageGeometry,
                   crop_hw: tuple[int, int]) -> np.ndarray:
    """Steps 1-3 of spec §1.5, keeping only the top-left `crop_hw` of the (H32, W32) result."""
    grid = as_low_res_grid(low_res)
    # Step 2 crops [:h', :w'] of the 1024 upsample, so the rest is never computed.
    resized = resize_bilinear_cropped(grid, (IMAGE_SIZE, IMAGE_SIZE), geometry.resized_hw)
    return resize_bilinear_cropped(resized, geometry.padded_hw, crop_hw)


def upscale_logits(low_res: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """(1, 1, 256, 256) float32 logits -> (H32, W32) float32 logits on the pad32 canvas.

    Bilinear (align_corners=False) upsample to 1024x1024, crop [:h', :w'], bilinear resize to
    (H32, W32); crop [:H, :W] yourself for the image's own pixels.
    """
    return _padded_logits(low_res, geometry, geometry.padded_hw)


def logits_to_mask(low_res: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """(1, 1, 256, 256) float32 logits -> (H, W) bool mask: `upscale_logits(...) > 0` cropped,
    bit for bit (see the module docstring)."""
    grid = as_low_res_grid(low_res)
    largest = float(np.max(np.abs(grid)))  # NaN when any logit is NaN
    if not largest <= LARGEST_LOGIT:
        return _padded_logits(grid, geometry, (geometry.height, geometry.width)) > 0.0
    rows = _composed_axis(geometry.resized_height, geometry.padded_height, geometry.height)
    cols = _composed_axis(geometry.resized_width, geometry.padded_width, geometry.width)
    along_x = _taps(grid, cols, axis=1)  # (256, W)
    margin = SIGN_MARGIN * largest + ABSOLUTE_MARGIN
    mask = np.empty((geometry.height, geometry.width), bool)
    unsure = []
    for start in range(0, geometry.height, MASK_BAND_ROWS):
        band = slice(start, min(start + MASK_BAND_ROWS, geometry.height))
        logits = _taps(along_x, ComposedAxis(rows.first[band], rows.weights[:, band]), axis=0)
        mask[band] = logits > 0.0
        np.abs(logits, out=logits)
        unsure.append(start + np.flatnonzero((logits <= margin).any(axis=1)))
    unsure = np.concatenate(unsure)
    if unsure.size:
        mask[unsure] = _exact_rows(grid, geometry, unsure) > 0.0
    return mask


class ComposedAxis(NamedTuple):
    """One axis of both resizes and crops: each output pixel as weights on TAPS consecutive
    low-res cells (the upsample reads 2 adjacent cells, the resize 2 adjacent upsampled ones)."""

    first: np.ndarray  # (n,) intp: the first of a pixel's cells
    weights: np.ndarray  # (TAPS, n) float32: the weights of cells first, first + 1, ...


@functools.lru_cache(maxsize=32)
def _composed_axis(resized: int, padded: int, image: int) -> ComposedAxis:
    """Upsample 256 -> 1024, crop to `resized`, resize to `padded`, crop to `image`."""
    upsample, resize = axis_table(LOW_RES, IMAGE_SIZE), axis_table(resized, padded)
    first = upsample.i0[resize.i0[:image]]
    weights = np.zeros((TAPS, image), np.float64)
    pixels = np.arange(image)
    for i2, l2 in ((resize.i0, resize.l0), (resize.i1, resize.l1)):
        i2, l2 = i2[:image], l2[:image].astype(np.float64)
        for i1, l1 in ((upsample.i0, upsample.l0), (upsample.i1, upsample.l1)):
            np.add.at(weights, (i1[i2] - first, pixels), l2 * l1[i2])
    axis = ComposedAxis(first, weights.astype(np.float32))
    for array in axis:
        array.flags.writeable = False
    return axis


def _taps(x: np.ndarray, axis_weights: ComposedAxis, axis: int) -> np.ndarray:
    """float32 sum over taps k of x[first + k] * weights[k] along `axis` (0 or 1) of x."""
    shape = (1, -1) if axis == 1 else (-1, 1)
    last = x.shape[axis] - 1
    out = None
    for k, weight in enumerate(axis_weights.weights):
        term = np.take(x, np.minimum(axis_weights.first + k, last), axis=axis)
        term *= weight.reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out


def _exact_rows(grid: np.ndarray, geometry: ImageGeometry, image_rows: np.ndarray) -> np.ndarray:
    """Rows `image_rows` (sorted) of `_padded_logits(grid, geometry, (H, W))`, computed alone:
    every value of the exact kernel depends only on its own taps."""
    first_rows = axis_table(LOW_RES, IMAGE_SIZE)
    first_cols = AxisTable(*(a[:geometry.resized_width] for a in axis_table(LOW_RES, IMAGE_SIZE)))
    second_rows = axis_table(geometry.resized_height, geometry.padded_height)
    second_cols = AxisTable(*(a[:geometry.width]
                              for a in axis_table(geometry.resized_width, geometry.padded_width)))
    i0, i1 = second_rows.i0[image_rows], second_rows.i1[image_rows]
    needed = np.unique(np.concatenate([i0, i1]))  # rows of the 1024 upsample they read
    upsampled = resize_with_tables(grid, AxisTable(*(a[needed] for a in first_rows)), first_cols,
                                   (IMAGE_SIZE, IMAGE_SIZE))
    rows = AxisTable(np.searchsorted(needed, i0), np.searchsorted(needed, i1),
                     second_rows.l0[image_rows], second_rows.l1[image_rows])
    return resize_with_tables(upsampled, rows, second_cols, geometry.padded_hw)
