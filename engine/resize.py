"""Bilinear resize with PyTorch's `align_corners=False` semantics, bit-exact in numpy.

Upstream resizes with `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.
On CPU, for contiguous (not channels-last) NCHW float32 data, torch runs its generic separable
kernel, whose float32 arithmetic (as compiled, with fused multiply-adds) is reproduced here
exactly:

* source index `s = fma(n_in / n_out, d + 0.5, -0.5)`, clamped below at 0 (spec §0);
* `i0 = min(floor(s), n_in - 1)`, `l1 = clip(s - i0, 0, 1)`, `l0 = 1 - l1`,
  `i1 = i0 + 1` unless `i0` is the last index; an axis whose length does not change is copied;
* each row is interpolated along x first, `t = fma(v[i0], l0, v[i1] * l1)`, then the two rows
  along y, `out = fma(t_top, l0, t_bottom * l1)`.

A float32 fused multiply-add is emulated in float64: the product of two float32 values is exact
there, so only the final rounding to float32 remains (a double rounding that can differ from a
true fma once in about 2**29 operations; none was seen against torch). Where every weight pair
is (1, 0), e.g. an axis whose length is unchanged, the gather alone gives the same finite values.

With one thread and 3 channels, or an output with H + W <= 128, torch switches to a
channels-last kernel whose float32 rounding differs by about 1 ulp; upstream (and the golden
data) ran the generic kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class AxisTable(NamedTuple):
    """Gather indices and weights for one axis: output `d` reads input `i0[d]` and `i1[d]`."""

    i0: np.ndarray  # (n_out,) intp
    i1: np.ndarray  # (n_out,) intp
    l0: np.ndarray  # (n_out,) float32, weight of i0
    l1: np.ndarray  # (n_out,) float32, weight of i1


def axis_table(n_in: int, n_out: int) -> AxisTable:
    """Indices and float32 weights of one axis of a bilinear (align_corners=False) resize."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis lengths must be positive, got n_in={n_in}, n_out={n_out}")
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.intp)
        return AxisTable(index, index, np.ones(n_out, np.float32), np.zeros(n_out, np.float32))
    scale = np.float32(n_in) / np.float32(n_out)
    # torch computes scale * (d + 0.5) - 0.5 as one fused multiply-add in float32.
    source = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5)
    source = np.maximum(source.astype(np.float32), np.float32(0.0))
    i0 = np.minimum(np.floor(source).astype(np.intp), n_in - 1)
    l1 = np.clip(source - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = i0 + (i0 < n_in - 1)
    l0 = np.float32(1.0) - l1
    return AxisTable(i0, i1, l0, l1)


def _blend_along(x: np.ndarray, table: AxisTable, axis: int) -> np.ndarray:
    """float32 `fma(x[i0], l0, x[i1] * l1)` along `axis` (-1 or -2) of `x`."""
    first = np.take(x, table.i0, axis=axis)
    if not table.l1.any():
        # Every weight pair is (1, 0): the fma returns x[i0] exactly (for finite values).
        return first
    shape = (-1,) if axis == -1 else (-1, 1)
    l0 = table.l0.reshape(shape)
    l1 = table.l1.reshape(shape)
    second = np.take(x, table.i1, axis=axis)
    second *= l1
    # The product of two float32 numbers is exact in float64, so one rounding remains.
    out = np.multiply(first, l0, dtype=np.float64)
    out += second
    return out.astype(np.float32)


def resize_with_tables(x: np.ndarray, rows: AxisTable, cols: AxisTable) -> np.ndarray:
    """Bilinear resize of `x` (..., H, W) float32 by tables -> (..., len(rows.i0), len(cols.i0)).

    The tables may be slices of `axis_table(...)` outputs: this computes exactly that
    sub-window of the full resize (used to skip work that a crop would throw away).
    """
    # Along x first, on the input rows that are read at all, then along y: torch's order.
    needed = np.unique(np.concatenate([rows.i0, rows.i1]))
    if len(needed) < x.shape[-2]:
        x = np.take(x, needed, axis=-2)
        rows = rows._replace(i0=np.searchsorted(needed, rows.i0),
                             i1=np.searchsorted(needed, rows.i1))
    return _blend_along(_blend_along(x, cols, axis=-1), rows, axis=-2)


def _check_image(x: np.ndarray) -> None:
    if x.dtype != np.float32:
        raise ValueError(f"expected float32 input, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"expected (..., H, W) with H, W >= 1, got shape {x.shape}")


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `x` (..., H, W) float32 to (..., size[0], size[1]) like torch bilinear, ac=False."""
    _check_image(x)
    out_h, out_w = (int(v) for v in size)
    return resize_with_tables(x, axis_table(x.shape[-2], out_h), axis_table(x.shape[-1], out_w))


def resize_bilinear_cropped(x: np.ndarray, size: tuple[int, int],
                            crop_hw: tuple[int, int]) -> np.ndarray:
    """`resize_bilinear(x, size)[..., :crop_hw[0], :crop_hw[1]]`, without computing the rest."""
    _check_image(x)
    out_h, out_w = (int(v) for v in size)
    crop_h, crop_w = (int(v) for v in crop_hw)
    if not (1 <= crop_h <= out_h and 1 <= crop_w <= out_w):
        raise ValueError(f"crop {crop_hw} must lie within the output size {size}")
    rows = AxisTable(*(a[:crop_h] for a in axis_table(x.shape[-2], out_h)))
    cols = AxisTable(*(a[:crop_w] for a in axis_table(x.shape[-1], out_w)))
    return resize_with_tables(x, rows, cols)
