"""Upstream test-time preprocessing: normalise (BGR), pad to /32, resize, pad to 1024 (spec §1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from focsam_onnx.config import IMAGE_SIZE
from focsam_onnx.engine.resize import resize_bilinear
from focsam_onnx.errors import InvalidInput

SIZE_DIVISOR = 32
# The "RGB" ImageNet constants, applied by channel INDEX to a BGR image: channel 0 (Blue) gets
# 123.675 / 58.395. That is how upstream fine-tuned and evaluated FocSAM (spec §1.1).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes linking an (H, W) image to the 1024x1024 network canvas.

    `padded_*` is the image padded at the bottom/right to a multiple of 32 (H32, W32), which
    upstream treats as "the original size"; `resized_*` is (h', w'), the pad32 canvas scaled so
    its longest side is 1024, placed at the top-left of the 1024x1024 input.
    """

    height: int
    width: int
    padded_height: int
    padded_width: int
    resized_height: int
    resized_width: int

    @classmethod
    def from_size(cls, height: int, width: int) -> ImageGeometry:
        """Geometry of an image of `height` x `width` pixels (spec §1.2-1.3)."""
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise InvalidInput(f"image size must be positive, got {height}x{width}")
        padded_height = -(-height // SIZE_DIVISOR) * SIZE_DIVISOR
        padded_width = -(-width // SIZE_DIVISOR) * SIZE_DIVISOR
        # Python float64, then floor after +0.5, exactly as upstream.
        scale = IMAGE_SIZE / max(padded_height, padded_width)
        return cls(
            height=height,
            width=width,
            padded_height=padded_height,
            padded_width=padded_width,
            resized_height=int(scale * padded_height + 0.5),
            resized_width=int(scale * padded_width + 0.5),
        )

    @property
    def padded_hw(self) -> tuple[int, int]:
        """(H32, W32)."""
        return self.padded_height, self.padded_width

    @property
    def resized_hw(self) -> tuple[int, int]:
        """(h', w')."""
        return self.resized_height, self.resized_width

    def to_network(self, xy: np.ndarray) -> np.ndarray:
        """Map points from original pixels to the 1024 frame, without the neck's +0.5.

        xy: (N, 2), (x, y) in original pixel coordinates. Returns (N, 2) float32, (x, y):
        `x * float32(w'/W32)`, `y * float32(h'/H32)` in float32 (the ratios in float64 first,
        as upstream computes them; the two axes generally scale differently).
        """
        xy = np.asarray(xy)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"expected points of shape (N, 2) in (x, y) order, got {xy.shape}")
        factors = np.array([self.resized_width / self.padded_width,
                            self.resized_height / self.padded_height], dtype=np.float32)
        return xy.astype(np.float32) * factors


def normalize(image_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (3, H, W) float32, `(x - PIXEL_MEAN[c]) / PIXEL_STD[c]` per index.

    `out`, if given, is a (3, H, W) float32 view written in place (e.g. the top-left of the
    pad32 canvas, which saves a copy).
    """
    if out is None:
        out = np.empty((3, *image_bgr.shape[:2]), dtype=np.float32)
    out[...] = image_bgr.transpose(2, 0, 1)
    out -= np.asarray(PIXEL_MEAN, dtype=np.float32).reshape(3, 1, 1)
    out /= np.asarray(PIXEL_STD, dtype=np.float32).reshape(3, 1, 1)
    return out


def _check_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise InvalidInput(f"expected a uint8 numpy image, got {type(image_bgr).__name__} "
                           f"of dtype {getattr(image_bgr, 'dtype', None)}")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or min(image_bgr.shape[:2]) < 1:
        raise InvalidInput(f"expected an (H, W, 3) BGR image, got shape {image_bgr.shape}")


def preprocess(image_bgr: np.ndarray) -> tuple[np.ndarray, ImageGeometry]:
    """(H, W, 3) uint8 BGR -> ((1, 3, 1024, 1024) float32 network input in B,G,R order, geometry).

    Normalise, pad bottom/right with 0.0 to (H32, W32), bilinear-resize (align_corners=False,
    no antialias) to (h', w'), pad bottom/right with 0.0 to 1024x1024.
    """
    _check_image(image_bgr)
    geometry = ImageGeometry.from_size(*image_bgr.shape[:2])
    padded = np.zeros((3, *geometry.padded_hw), dtype=np.float32)
    normalize(image_bgr, out=padded[:, :geometry.height, :geometry.width])
    resized = resize_bilinear(padded, geometry.resized_hw)
    network_input = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    network_input[0, :, :geometry.resized_height, :geometry.resized_width] = resized
    return network_input, geometry
