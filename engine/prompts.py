"""What a user (or the click simulator) gives the model, in original-image pixels: clicks and a
box, their one serialised form (shared by files and HTTP), and the decoder's point list they
become (with the box's corners or the padding point).

Coordinates are always x first: x is the column, y the row, (0, 0) the top-left pixel.
Serialised, a click is `{"x": 12, "y": 34, "positive": true}` and a box
`{"box": [x0, y0, x1, y1]}` (top-left and bottom-right corners); an object's prompts are a list
of these in the order they were given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from focsam_onnx.errors import InvalidInput

PAD_LABEL = -1.0  # the padding point, sent when there is no box
BOX_LABELS = (2.0, 3.0)  # a box's top-left and bottom-right corners


@dataclass(frozen=True)
class Click:
    """One click at integer pixel (x, y) of the original image: x column, y row.

    positive: True for a foreground click (network label 1), False for background (label 0).
    """

    x: int
    y: int
    positive: bool = True

    @property
    def xy(self) -> tuple[int, int]:
        return (self.x, self.y)

    @property
    def label(self) -> int:
        """Prompt-encoder label: 1 positive, 0 negative."""
        return 1 if self.positive else 0

    def checked(self, width: int, height: int) -> Click:
        """This click, or InvalidInput if it is not inside a width x height image."""
        if not (0 <= self.x < width and 0 <= self.y < height):
            raise InvalidInput(f"click (x={self.x}, y={self.y}) is outside the {width}x{height} "
                               f"image (valid: 0 <= x < {width}, 0 <= y < {height})")
        return self

    def to_json(self) -> dict:
        return {"x": self.x, "y": self.y, "positive": self.positive}


@dataclass(frozen=True)
class Box:
    """A box prompt in original-image pixels: (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def corners(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def checked(self, width: int, height: int) -> Box:
        """This box, or InvalidInput unless 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height."""
        if not (0 <= self.x0 < self.x1 <= width and 0 <= self.y0 < self.y1 <= height):
            raise InvalidInput(f"box {self.corners} must satisfy 0 <= x0 < x1 <= {width} and "
                               f"0 <= y0 < y1 <= {height} (the image's pixels)")
        return self

    def to_json(self) -> dict:
        return {"box": list(self.corners)}


Prompt = Click | Box


def prompt_from_json(data: object) -> Prompt:
    """A Click from `{"x", "y", "positive"}` or a Box from `{"box": [x0, y0, x1, y1]}`."""
    if isinstance(data, Mapping) and "box" in data:
        values = data["box"]
        if not (isinstance(values, list | tuple) and len(values) == 4
                and all(_is_number(v) for v in values)):
            raise InvalidInput(f"a box is {{\"box\": [x0, y0, x1, y1]}} with four finite "
                               f"numbers, got {data!r}")
        return Box(*(float(v) for v in values))
    if isinstance(data, Mapping) and {"x", "y"} <= set(data):
        x, y, positive = data["x"], data["y"], data.get("positive", True)
        if not (_is_integer(x) and _is_integer(y)) or not isinstance(positive, bool):
            raise InvalidInput("a click is {\"x\": int, \"y\": int, \"positive\": bool} in "
                               f"integer pixels, got {data!r}")
        return Click(int(x), int(y), positive)
    raise InvalidInput(f"a prompt is a click {{\"x\", \"y\", \"positive\"}} or a box "
                       f"{{\"box\": [x0, y0, x1, y1]}}, got {data!r}")


def prompts_from_json(items: Iterable[object]) -> tuple[Prompt, ...]:
    return tuple(prompt_from_json(item) for item in items)


def prompts_to_json(prompts: Iterable[Prompt]) -> list[dict]:
    return [prompt.to_json() for prompt in prompts]


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_integer(value: object) -> bool:
    return _is_number(value) and float(value).is_integer()


def point_list(coords: np.ndarray, labels: np.ndarray,
               box: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's point inputs, as upstream's prompt encoder builds them.

    coords: (N, 2) (x, y) in the 1024 frame; labels: (N,) 1/0; box: (4,) (x0, y0, x1, y1) in
    the 1024 frame or None. Returns point_coords (1, M, 2) and point_labels (1, M) float32:
    the clicks, then the box's corners labelled 2 and 3, or, without a box, the padding point
    (0, 0) labelled -1 (segment-anything pads only when no box is given).
    """
    coords = np.asarray(coords, np.float32).reshape(-1, 2)
    labels = np.asarray(labels, np.float32).reshape(-1)
    if box is None:
        extra_xy, extra_labels = np.zeros((1, 2), np.float32), [PAD_LABEL]
    else:
        extra_xy, extra_labels = np.asarray(box, np.float32).reshape(2, 2), list(BOX_LABELS)
    point_coords = np.concatenate([coords, extra_xy])[None]
    point_labels = np.concatenate([labels, np.array(extra_labels, np.float32)])[None]
    return point_coords, point_labels
