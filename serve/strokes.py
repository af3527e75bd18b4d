"""Brush and eraser strokes: touch-ups applied to an object's mask after its clicks.

A stroke is a polyline of image pixels painted (brush) or cleared (eraser) with a round pen of
`radius` pixels: a disc at every point and a line of width 2 * radius + 1 between neighbours.
The saved mask is the clicks' mask with every stroke applied in order, so a record's prompts
and strokes replay to the same mask. `after_prompts` places a stroke in the object's history
(it was made after that many prompts), which is what undo walks back.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from focsam_onnx.errors import InvalidInput

MAX_POINTS = 4096
MAX_RADIUS = 512


@dataclass(frozen=True)
class Stroke:
    points: tuple[tuple[int, int], ...]  # (x, y) image pixels, in drawing order
    radius: int
    erase: bool
    after_prompts: int = 0

    def __post_init__(self):
        if not 1 <= len(self.points) <= MAX_POINTS:
            raise InvalidInput(f"a stroke has 1 to {MAX_POINTS} points, not {len(self.points)}")
        if not 0 <= self.radius <= MAX_RADIUS:
            raise InvalidInput(f"a stroke's radius is 0 to {MAX_RADIUS} pixels")

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points], "radius": self.radius,
                "erase": self.erase, "after_prompts": self.after_prompts}

    @classmethod
    def from_json(cls, entry: dict) -> Stroke:
        return cls(tuple((int(x), int(y)) for x, y in entry["points"]), int(entry["radius"]),
                   bool(entry["erase"]), int(entry.get("after_prompts", 0)))


def apply_strokes(mask: np.ndarray, strokes: tuple[Stroke, ...] | list[Stroke]) -> np.ndarray:
    """(H, W) bool mask with `strokes` painted and erased in order (a new array)."""
    if not strokes:
        return mask
    out = mask.astype(np.uint8)
    for stroke in strokes:
        value = 0 if stroke.erase else 1
        points = [tuple(p) for p in stroke.points]
        for point in points:
            cv2.circle(out, point, stroke.radius, value, -1)
        for a, b in zip(points, points[1:]):
            cv2.line(out, a, b, value, 2 * stroke.radius + 1)
    return out.astype(bool)
