"""Decoder low-res logits back to image pixels: upsample, crop, resize, threshold (spec §1.5)."""

from __future__ import annotations

import numpy as np

from focsam_onnx.config import IMAGE_SIZE
from focsam_onnx.config import LOW_RES_MASK as LOW_RES
from focsam_onnx.engine.preprocess import ImageGeometry
from focsam_onnx.engine.resize import resize_bilinear_cropped


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
    """(1, 1, 256, 256) float32 logits -> (H, W) bool mask: `upscale_logits(...) > 0` cropped."""
    image_hw = (geometry.height, geometry.width)
    return _padded_logits(low_res, geometry, image_hw) > 0.0
