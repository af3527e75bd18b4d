"""Pictures for people: the image with the mask tinted and the clicks drawn."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from focsam_onnx.engine.prompts import Click

MASK_TINT = (255, 144, 30)  # BGR: a blue that stays visible on most photographs
POSITIVE = (0, 200, 0)
NEGATIVE = (0, 0, 230)


def draw_overlay(image_bgr: np.ndarray, mask: np.ndarray, clicks: Sequence[Click],
                 alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 BGR image, (H, W) bool mask -> a new BGR image with tint and clicks."""
    if mask.shape != image_bgr.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image_bgr.shape[:2]}")
    out = image_bgr.copy()
    tinted = (1 - alpha) * out[mask] + alpha * np.array(MASK_TINT, np.float32)
    out[mask] = tinted.round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, MASK_TINT, 1)
    radius = max(3, round(max(mask.shape) / 150))
    for click in clicks:
        colour = POSITIVE if click.positive else NEGATIVE
        cv2.circle(out, (click.x, click.y), radius, colour, -1, cv2.LINE_AA)
        cv2.circle(out, (click.x, click.y), radius, (255, 255, 255), 1, cv2.LINE_AA)
    return out
