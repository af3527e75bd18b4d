"""A mask as the API sends it, in the format the client asks for.

- `rle`: COCO run-length encoding (pycocotools; column-major, `{"size": [H, W], "counts"}`),
  compact for real masks and what most training code reads;
- `png`: a 0/255 PNG, base64;
- `polygons`: OpenCV's contours through the boundary pixels' centres, each outer ring followed
  by its holes (`hole: true`), x first; `CHAIN_APPROX_SIMPLE` drops only the points inside
  straight runs, so the outline is the mask's own (filling it back differs only on the
  boundary pixels' half);
- `bits`: row-major packed bits, base64 (what the labelling page draws).
"""

from __future__ import annotations

import base64
import warnings
from typing import Literal

import cv2
import numpy as np

from focsam_onnx.errors import require

MaskFormat = Literal["rle", "png", "polygons", "bits"]


def encode_mask(mask: np.ndarray, fmt: MaskFormat) -> dict:
    """(H, W) bool -> `{"format": fmt, "height": H, "width": W, ...}`."""
    height, width = mask.shape
    body = {"format": fmt, "height": int(height), "width": int(width)}
    if fmt == "rle":
        return {**body, **rle(mask)}
    if fmt == "png":
        png = cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes()
        return {**body, "png": base64.b64encode(png).decode("ascii")}
    if fmt == "polygons":
        return {**body, "polygons": polygons(mask)}
    return {**body, "bits": base64.b64encode(np.packbits(mask.ravel()).tobytes()).decode()}


def rle(mask: np.ndarray) -> dict:
    coco = require("pycocotools.mask", "COCO RLE masks", "serve")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def polygons(mask: np.ndarray) -> list[dict]:
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    return [{"points": contour.reshape(-1, 2).tolist(), "hole": bool(parent >= 0)}
            for contour, parent in zip(contours, hierarchy[0][:, 3])]
