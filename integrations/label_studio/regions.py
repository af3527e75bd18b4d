"""Label Studio regions -> FocSAM prompts, and a mask -> a Label Studio brush region.

Label Studio gives region coordinates in percent of the original image (x from the left, y from
the top; a rectangle's x, y is its top-left corner, width and height also in percent). Pixels are
recovered by rounding: a whole-pixel click stored as a percent does not always multiply back to
an exact integer, and truncating would move it one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from focsam_onnx.engine.prompts import Box, Click, Prompt
from focsam_onnx.errors import InvalidInput
from focsam_onnx.integrations.label_studio.brush_rle import mask_to_rle

# A keypoint without `is_positive` (a plain, non-smart tool) is negative when its label is one
# of these names, in any case; Label Studio's smart tools always send `is_positive` (Alt-click).
NEGATIVE_LABELS = ("negative", "background")
PROMPT_TYPES = ("keypointlabels", "rectanglelabels")


@dataclass(frozen=True)
class RegionPrompts:
    """The prompts of one object, in the order its regions were made.

    width, height: the original image size the regions were drawn on; to_name: their image tag;
    label: the label of the newest region (the mask is labelled with it).
    """

    prompts: tuple[Prompt, ...]
    width: int
    height: int
    to_name: str | None
    label: str | None


def region_prompts(regions: list) -> RegionPrompts:
    """The keypoint and rectangle regions of `regions` (Label Studio's `context.result`) as
    prompts, in list order; other region types are skipped. InvalidInput if none is left or
    a region is malformed."""
    if not isinstance(regions, list):
        raise InvalidInput("context.result must be a list of regions, "
                           f"got {type(regions).__name__}")
    usable = [r for r in regions if isinstance(r, dict) and r.get("type") in PROMPT_TYPES]
    if not usable:
        raise InvalidInput("no keypoint or rectangle region in context.result: place a smart "
                           "keypoint or draw a smart rectangle")
    sizes = {(r.get("original_width"), r.get("original_height")) for r in usable}
    if len(sizes) != 1:
        raise InvalidInput(f"the regions were drawn on images of different sizes: {sorted(sizes)}")
    width, height = _size(sizes.pop())
    prompts, label = [], None
    for i, region in enumerate(usable, 1):
        value = region.get("value")
        if not isinstance(value, dict):
            raise InvalidInput(f"region {i} has no 'value' object")
        if _number(region.get("image_rotation", 0) or 0, i, "image_rotation") % 360:
            raise InvalidInput(f"region {i} was drawn on a rotated image; rotate it back first")
        labels = value.get(region["type"]) or []
        label = labels[0] if labels else None
        if region["type"] == "keypointlabels":
            prompts.append(_click(region, value, label, width, height, i))
        else:
            prompts.append(_box(value, width, height, i))
    return RegionPrompts(tuple(prompts), width, height, usable[-1].get("to_name"), label)


def _size(size: tuple) -> tuple[int, int]:
    width, height = size
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise InvalidInput(f"regions need positive integer original_width and original_height, "
                           f"got {width!r} x {height!r}")
    return width, height


def _number(value, index: int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"region {index}: {name} is {value!r}, not a finite number")
    return float(value)


def _pixel(percent: float, size: int) -> int:
    return round(percent * size / 100)


def _click(region: dict, value: dict, label: str | None, width: int, height: int,
           index: int) -> Click:
    x = _pixel(_number(value.get("x"), index, "x"), width)
    y = _pixel(_number(value.get("y"), index, "y"), height)
    if not (0 <= x <= width and 0 <= y <= height):
        raise InvalidInput(f"region {index}: keypoint ({value.get('x')}%, {value.get('y')}%) is "
                           "outside the image")
    if "is_positive" in region:
        positive = bool(region["is_positive"])
    else:
        positive = (label or "").lower() not in NEGATIVE_LABELS
    # a click on the right or bottom edge (100 %) belongs to the last pixel
    return Click(x=min(x, width - 1), y=min(y, height - 1), positive=positive)


def _box(value: dict, width: int, height: int, index: int) -> Box:
    if _number(value.get("rotation", 0) or 0, index, "rotation") % 360:
        raise InvalidInput(f"region {index}: a rotated rectangle cannot be a box prompt")
    x, y = _number(value.get("x"), index, "x"), _number(value.get("y"), index, "y")
    w, h = _number(value.get("width"), index, "width"), _number(value.get("height"), index,
                                                                 "height")
    x0, y0 = max(0, _pixel(x, width)), max(0, _pixel(y, height))
    x1, y1 = min(width, _pixel(x + w, width)), min(height, _pixel(y + h, height))
    return Box(x0, y0, x1, y1)


def brush_region(mask: np.ndarray, from_name: str, to_name: str, label: str,
                 score: float) -> dict:
    """A BrushLabels result holding `mask` ((H, W) bool), as Label Studio stores one (its RLE
    holds four bytes a pixel, 255 on the mask: Label Studio draws the fourth)."""
    height, width = mask.shape
    return {
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]},
        "score": score,
        "readonly": False,
    }
