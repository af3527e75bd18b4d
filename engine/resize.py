"""Bilinear resize with PyTorch's `align_corners=False` semantics, bit-exact in numpy.

Upstream resizes with `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.
On CPU, for contiguous (not channels-last) NCHW float32 data and outputs with H + W > 128,
torch runs its generic separable kernel, whose float32 arithmetic (as compiled, with fused
multiply-adds) is reproduced here exactly:

* source index `s = fma(n_in / n_out, d + 0.5, -0.5)`, clamped below at 0 (spec §0);
* `i0 = min(floor(s), n_in - 1)`, `l1 = clip(s - i0, 0, 1)`, `l0 = 1 - l1`,
  `i1 = i0 + 1` unless `i0` is the last index; an axis whose length does not change is copied;
* each row is interpolated along x first, `t = fma(v[i0], l0, v[i1] * l1)`, then the two rows
  along y, `out = fma(t_top, l0, t_bottom * l1)`.

A float32 fused multiply-add is emulated in float64: the product of two float32 values is exact
there, so only the final rounding to float32 remains (a double rounding that can differ from a
true fma once in about 2**29 operations; none was seen against torch). Where every weight pair
is (1, 0), e.g. an axis whose length is unchanged, the gather alone gives the same finite values.

For outputs with H + W <= 128 torch switches to a kernel that sums four taps with weights
`wy * wx`, `fma(v11, w11, fma(v10, w10, fma(v00, w00, v01 * w01)))` per pixel; that one is
reproduced too (exact for inputs with fewer than 8 channels, which run its scalar loop). torch
also takes that kernel for 3-channel data when it runs on one thread; upstream (and the golden
data) ran several threads, so the size rule alone is followed here.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

# torch resizes outputs with H + W <= 128 with its "channels-last" kernel, whatever the layout.
SMALL_OUTPUT = 128
# Elements per band of the separable kernel: float64 temporaries of 8 MiB, whatever the image.
BAND_ELEMENTS = 1 << 20


class AxisTable(NamedTuple):
    """Gather indices and weights for one axis: output `d` reads input `i0[d]` and `i1[d]`."""

    i0: np.ndarray  # (n_out,) intp
    i1: np.ndarray  # (n_out,) intp
    l0: np.ndarray  # (n_out,) float32, weight of i0
    l1: np.ndarray  # (n_out,) float32, weight of i1


@functools.lru_cache(maxsize=64)
def axis_table(n_in: int, n_out: int) -> AxisTable:
    """Indices and float32 weights of one axis of a bilinear (align_corners=False) resize.

    Cached (read-only arrays): every click of a session post-processes with the same sizes.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis lengths must be positive, got n_in={n_in}, n_out={n_out}")
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.intp)
        return _read_only(AxisTable(index, index.copy(), np.ones(n_out, np.float32),
                                    np.zeros(n_out, np.float32)))
    scale = np.float32(n_in) / np.float32(n_out)
    # torch computes scale * (d + 0.5) - 0.5 as one fused multiply-add in float32.
    source = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5)
    source = np.maximum(source.astype(np.float32), np.float32(0.0))
    i0 = np.minimum(np.floor(source).astype(np.intp), n_in - 1)
    l1 = np.clip(source - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = i0 + (i0 < n_in - 1)
    l0 = np.float32(1.0) - l1
    return _read_only(AxisTable(i0, i1, l0, l1))


def _read_only(table: AxisTable) -> AxisTable:
    for array in table:
        array.flags.writeable = False
    return table


def _blend_along(x: np.ndarray, table: AxisTable, axis: int, copy_only: bool) -> np.ndarray:
    """float32 `fma(x[i0], l0, x[i1] * l1)` along `axis` (-1 or -2) of `x`.

    copy_only: every weight pair of the whole table is (1, 0), so the fma returns x[i0]
    exactly (for finite values); decided on the whole table, not on a band of it.
    """
    first = np.take(x, table.i0, axis=axis)
    if copy_only:
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


def _bands(n_rows: int, row_elements: int) -> list[slice]:
    """Row bands of at most BAND_ELEMENTS elements each (at least one row per band)."""
    step = max(1, BAND_ELEMENTS // max(1, row_elements))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _separable(x: np.ndarray, rows: AxisTable, cols: AxisTable) -> np.ndarray:
    """torch's generic kernel: along x first, on the input rows read at all, then along y.

    Both passes run a band of rows at a time into preallocated float32 outputs, so the float64
    temporaries stay small on large images; every element is computed as without bands.
    """
    needed = np.unique(np.concatenate([rows.i0, rows.i1]))
    rows = rows._replace(i0=np.searchsorted(needed, rows.i0),
                         i1=np.searchsorted(needed, rows.i1))
    lead, width = x.shape[:-2], len(cols.i0)
    row_elements = int(np.prod(lead, dtype=np.int64)) * width
    along_x = np.empty((*lead, len(needed), width), np.float32)
    copy_cols = not cols.l1.any()
    for band in _bands(len(needed), row_elements * max(1, x.shape[-1] // width)):
        along_x[..., band, :] = _blend_along(x[..., needed[band], :], cols, -1, copy_cols)
    out = np.empty((*lead, len(rows.i0), width), np.float32)
    copy_rows = not rows.l1.any()
    for band in _bands(len(rows.i0), row_elements):
        out[..., band, :] = _blend_along(along_x, AxisTable(*(a[band] for a in rows)), -2,
                                         copy_rows)
    return out


def _four_tap(x: np.ndarray, rows: AxisTable, cols: AxisTable) -> np.ndarray:
    """torch's small-output kernel: float32 weights `wy * wx`, then a chain of three fmas,
    `fma(v11, w11, fma(v10, w10, fma(v00, w00, v01 * w01)))`."""
    taps = [(rows.i0, rows.l0, cols.i0, cols.l0), (rows.i0, rows.l0, cols.i1, cols.l1),
            (rows.i1, rows.l1, cols.i0, cols.l0), (rows.i1, rows.l1, cols.i1, cols.l1)]
    values = [x[..., ri[:, None], ci[None, :]] for ri, _, ci, _ in taps]
    weights = [wy[:, None] * wx[None, :] for _, wy, _, wx in taps]
    acc = np.multiply(values[1], weights[1], dtype=np.float32)
    for value, weight in ((values[0], weights[0]), (values[2], weights[2]),
                          (values[3], weights[3])):
        acc = (np.multiply(value, weight, dtype=np.float64) + acc).astype(np.float32)
    return acc


def resize_with_tables(x: np.ndarray, rows: AxisTable, cols: AxisTable,
                       full_size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of `x` (..., H, W) float32 by tables -> (..., len(rows.i0), len(cols.i0)).

    The tables may be leading slices of `axis_table(...)` outputs for an output of
    `full_size`: this computes exactly that sub-window of the full resize (used to skip work
    that a crop would throw away). `full_size` picks the kernel, as torch does.
    """
    if full_size[0] + full_size[1] <= SMALL_OUTPUT:
        return _four_tap(x, rows, cols)
    return _separable(x, rows, cols)


def _check_image(x: np.ndarray) -> None:
    if x.dtype != np.float32:
        raise ValueError(f"expected float32 input, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"expected (..., H, W) with H, W >= 1, got shape {x.shape}")


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `x` (..., H, W) float32 to (..., size[0], size[1]) like torch bilinear, ac=False."""
    _check_image(x)
    out_h, out_w = (int(v) for v in size)
    rows = axis_table(x.shape[-2], out_h)
    return resize_with_tables(x, rows, axis_table(x.shape[-1], out_w), (out_h, out_w))


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
    return resize_with_tables(x, rows, cols, (out_h, out_w))
