"""The focus refiner's region of interest: bbox of the coarse mask, 1.4x expansion, token windows.

Everything is on the 1024x1024 padded canvas (the padded area can be part of the ROI) and the
64x64 token grid over it (spec §5.1). Bboxes are `(left, up, right, bottom)` in pixels with
right/bottom exclusive; token grids are indexed `[row, col]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from focsam_onnx.config import EMBED_GRID, IMAGE_SIZE, RefinerConfig
from focsam_onnx.engine.postprocess import as_low_res_grid
from focsam_onnx.engine.resize import resize_bilinear

CANVAS = IMAGE_SIZE
TOKEN_GRID = EMBED_GRID
WINDOW = RefinerConfig.window_size  # the released refiners all use 16-token windows

Bbox = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Roi:
    """raw_bbox: bbox of the coarse mask; bbox: after expansion; token_mask: (1, 1, 64, 64) 0/1."""

    raw_bbox: Bbox
    bbox: Bbox
    token_mask: np.ndarray


def bbox_from_logits(low_res: np.ndarray) -> Bbox:
    """(1, 1, 256, 256) logits -> (left, up, right, bottom) of `upsample_1024(logits) > 0`.

    An empty mask gives the whole canvas (0, 0, 1024, 1024), as upstream does.
    """
    positive = resize_bilinear(as_low_res_grid(low_res), (CANVAS, CANVAS)) > 0.0
    rows = np.flatnonzero(positive.any(axis=1))
    if rows.size == 0:
        return 0, 0, CANVAS, CANVAS
    cols = np.flatnonzero(positive.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _check_bbox(bbox: Bbox, canvas: int) -> None:
    left, up, right, bottom = bbox
    if not (0 <= left < right <= canvas and 0 <= up < bottom <= canvas):
        raise ValueError(f"bbox (left, up, right, bottom) = {bbox} is empty or outside the "
                         f"{canvas}x{canvas} canvas")


def expand_bbox(bbox: Bbox, ratio: tuple[float, float] = (1.4, 1.4), canvas: int = CANVAS) -> Bbox:
    """Scale `bbox` about its centre by `ratio` = (r_h, r_w), in float32, round half to even.

    `left' = round(xc - r_w * (xc - left))`, `right' = round(xc + r_w * (right - xc))` with
    `xc = (left + right) / 2`, likewise up/bottom with r_h; then clipped to [0, canvas].
    """
    _check_bbox(bbox, canvas)
    left, up, right, bottom = (np.float32(v) for v in bbox)
    r_h, r_w = (np.float32(r) for r in ratio)
    two = np.float32(2.0)
    xc = (left + right) / two
    yc = (up + bottom) / two
    expanded = np.array([xc - r_w * (xc - left), yc - r_h * (yc - up),
                         xc + r_w * (right - xc), yc + r_h * (bottom - yc)], dtype=np.float32)
    new_left, new_up, new_right, new_bottom = np.clip(np.round(expanded), 0, canvas).astype(int)
    return int(new_left), int(new_up), int(new_right), int(new_bottom)


def token_mask(bbox: Bbox, grid: int = TOKEN_GRID, canvas: int = CANVAS) -> np.ndarray:
    """(1, 1, grid, grid) float32: 1 where a token's pixel block overlaps `bbox`, else 0.

    Equals upstream's adaptive max-pool of the 0/1 pixel ROI to grid x grid (blocks of
    canvas/grid pixels): token (i, j) is 1 iff block rows [b*i, b*i + b) meet [up, bottom) and
    block columns [b*j, b*j + b) meet [left, right).
    """
    if canvas % grid:
        raise ValueError(f"canvas {canvas} is not a multiple of the token grid {grid}")
    _check_bbox(bbox, canvas)
    left, up, right, bottom = bbox
    block = canvas // grid
    starts = np.arange(grid) * block
    rows = (starts < bottom) & (starts + block > up)
    cols = (starts < right) & (starts + block > left)
    return (rows[:, None] & cols[None, :]).astype(np.float32)[None, None]


def roi_from_logits(low_res: np.ndarray, expand_ratio: tuple[float, float] = (1.4, 1.4)) -> Roi:
    """(1, 1, 256, 256) coarse logits -> the refiner's ROI (raw bbox, expanded bbox, token mask)."""
    raw_bbox = bbox_from_logits(low_res)
    bbox = expand_bbox(raw_bbox, expand_ratio)
    return Roi(raw_bbox=raw_bbox, bbox=bbox, token_mask=token_mask(bbox))


def selected_windows(mask: np.ndarray, window: int = WINDOW, shift: int = 0) -> np.ndarray:
    """Indices (int64, ascending, row-major `r * n + c`) of windows holding any set token.

    mask: (1, 1, G, G) or (G, G) token mask. The grid is first rolled by -shift on both axes,
    as upstream's shifted blocks do, so shifted window (r, c) covers token rows
    (window*r + shift ...) mod G.
    """
    grid = np.asarray(mask)
    if grid.ndim == 4 and grid.shape[:2] == (1, 1):
        grid = grid[0, 0]
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] % window:
        raise ValueError(f"expected a square token mask divisible into {window}x{window} "
                         f"windows, got shape {np.shape(mask)}")
    if shift:
        grid = np.roll(grid, (-shift, -shift), axis=(0, 1))
    n = grid.shape[0] // window
    occupied = (grid != 0).reshape(n, window, n, window).any(axis=(1, 3))
    return np.flatnonzero(occupied).astype(np.int64)
