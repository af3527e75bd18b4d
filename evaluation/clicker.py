"""Upstream FocSAM's click simulator (spec §6.4): error-region distance maps and the next click.

Coordinates: the simulator works in (row, column) = (y, x) pixel indices of the original image,
as upstream does; `Click.xy` (engine/prompts.py) gives the (x, y) order the network wants. Masks
are (H, W) arrays in which only the value 1 counts as foreground (anything else is background).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from focsam_onnx.engine.prompts import Click

# float32 machine epsilon, as upstream adds `torch.finfo(torch.float).eps` to sfc_inner_k.
_F32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class ClickProposal:
    """What the simulator sees before its one random draw.

    fneg_max, fpos_max: largest distance in the false-negative / false-positive map (float32).
    positive: kind of click the candidates are for (meaningless when there are none).
    candidates_yx: (N, 2) int64 (y, x), row-major; N = 0 means no click this step.
    """

    fneg_max: np.float32
    fpos_max: np.float32
    positive: bool
    candidates_yx: np.ndarray

    @property
    def n_candidates(self) -> int:
        return int(self.candidates_yx.shape[0])


def _check_inputs(pred: np.ndarray, gt: np.ndarray, clicks: Sequence[Click]) -> None:
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must be (H, W) of one shape, got {pred.shape} and {gt.shape}"
        )
    height, width = gt.shape
    for click in clicks:
        if not (0 <= click.y < height and 0 <= click.x < width):
            raise ValueError(f"click {click} lies outside the {height}x{width} image")


def _region_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each region pixel to the nearest non-region pixel or image border.

    region: (H, W) bool. Returns (H, W) float32, 0 outside the region. Upstream crops the
    region's tight bbox and pads it by one zero pixel before OpenCV's precise transform; the
    float32 values depend on that crop, so it is reproduced rather than transforming the image.
    """
    dist = np.zeros(region.shape, dtype=np.float32)
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return dist
    cols = np.flatnonzero(region.any(axis=0))
    y0, y1 = rows[0], rows[-1] + 1
    x0, x1 = cols[0], cols[-1] + 1
    crop = np.pad(region[y0:y1, x0:x1].astype(np.uint8), 1)
    crop_dist = cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist[y0:y1, x0:x1] = crop_dist[1:-1, 1:-1]
    return dist


def error_distance_maps(
    pred: np.ndarray, gt: np.ndarray, clicks: Sequence[Click]
) -> tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive distance maps, exactly as upstream.

    pred, gt: (H, W), foreground = value 1. clicks: earlier clicks; their pixels are removed from
    both error regions so they act as background seeds of the distance transform.
    Returns (fneg_dist, fpos_dist), each (H, W) float32.
    """
    _check_inputs(pred, gt, clicks)
    pred_fg = pred == 1
    gt_fg = gt == 1
    clicked = np.zeros(gt.shape, dtype=bool)
    for click in clicks:
        clicked[click.y, click.x] = True
    fneg = ~pred_fg & gt_fg & ~clicked
    fpos = pred_fg & ~gt_fg & ~clicked
    return _region_distance(fneg), _region_distance(fpos)


def _distance_scale(sfc_inner_k: float) -> float:
    """Candidate threshold factor; k = 1 keeps only the farthest pixels, k < 0 the whole region."""
    if sfc_inner_k >= 1.0:
        return 1.0 / (sfc_inner_k + _F32_EPS)
    if sfc_inner_k < 0.0:
        return 0.0
    raise ValueError(f"sfc_inner_k must be >= 1 or < 0, got {sfc_inner_k}")


def propose_click(
    pred: np.ndarray, gt: np.ndarray, clicks: Sequence[Click], sfc_inner_k: float = 1.0
) -> ClickProposal:
    """Kind of the next click and its candidate pixels, without drawing one.

    pred, gt: (H, W), foreground = value 1. Positive when max FN distance > max FP distance
    (strict: ties give a negative click). No candidates when both maxima are 0.
    """
    scale = _distance_scale(sfc_inner_k)
    fneg_dist, fpos_dist = error_distance_maps(pred, gt, clicks)
    fneg_max, fpos_max = fneg_dist.max(), fpos_dist.max()
    positive = bool(fneg_max > fpos_max)
    if fneg_max == 0 and fpos_max == 0:
        return ClickProposal(fneg_max, fpos_max, positive, np.zeros((0, 2), dtype=np.int64))
    dist, dmax = (fneg_dist, fneg_max) if positive else (fpos_dist, fpos_max)
    # Upstream multiplies a Python float by a float32 0-d tensor: the product is float32.
    threshold = np.float32(scale) * dmax
    candidates = np.argwhere(dist > threshold).astype(np.int64)
    return ClickProposal(fneg_max, fpos_max, positive, candidates)


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    clicks: Sequence[Click],
    rng: random.Random,
    sfc_inner_k: float = 1.0,
) -> Click | None:
    """The click upstream's simulator would add, or None when nothing is left to correct.

    pred, gt: (H, W), foreground = value 1; clicks: the earlier clicks.
    rng: consumed by exactly one `rng.choice(range(n))` per returned click, even when n = 1, and
    not at all when None is returned. Seed `random.Random(42)` once per dataset run and share it
    across samples in dataset order to reproduce upstream's clicks.
    """
    proposal = propose_click(pred, gt, clicks, sfc_inner_k)
    if proposal.n_candidates == 0:
        return None
    index = rng.choice(range(proposal.n_candidates))
    y, x = proposal.candidates_yx[index]
    return Click(int(x), int(y), proposal.positive)
