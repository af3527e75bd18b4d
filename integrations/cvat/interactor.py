"""CVAT's interactor protocol on FocSAM, with the click order CVAT does not send.

A request is `{"image": base64, "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
"obj_bbox": [[x0, y0], [x1, y1]] or null}` in image pixels; the answer is `{"mask": rows of
0 / 255}` at the image's size, as CVAT's own interactors answer.

CVAT sends every point of the object on every call, positives and negatives in two lists, so
the order between them is lost; FocSAM's mask depends on it (the refiner runs at the 2nd step).
`ClickOrder` recovers it: per image it remembers the order of the previous call, keeps the
points still present in that order, and appends the new ones. CVAT calls after each point, so
each call adds one point and the order is exact. Where one call brings several new points (a
call made while the previous one was running, the first call after the function restarted, or
a second worker without this memory) they are taken positives first, then negatives, each in
CVAT's list order: the order CVAT's HRNet function uses for all of them. A box comes first (it is
drawn before any point) and a different box starts a new object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.image_io import decode_image
from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.engine.replay_cache import MAX_PROMPTS, ReplayCache
from focsam_onnx.errors import InvalidInput, TooLarge
from focsam_onnx.integrations.common import predict

REMEMBERED_IMAGES = 64  # click orders kept (a few hundred bytes each)


@dataclass(frozen=True)
class InteractorRequest:
    """A parsed request. image: (H, W, 3) uint8 BGR; image_key: sha256 of the encoded image;
    positives, negatives: clicks in CVAT's list order; box: the optional object box."""

    image: np.ndarray
    image_key: str
    positives: tuple[Click, ...]
    negatives: tuple[Click, ...]
    box: Box | None


def parse_request(body) -> InteractorRequest:
    """CVAT's request body (a dict, or its JSON as bytes or str) -> InteractorRequest.
    InvalidInput (TooLarge) names the field that is wrong."""
    if isinstance(body, (bytes, str)):
        import json

        try:
            body = json.loads(body)
        except ValueError:
            raise InvalidInput("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    encoded = body.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise InvalidInput("'image' must be the frame as a base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("'image' is not valid base64") from None
    image = decode_image(data, "the frame")
    height, width = image.shape[:2]
    positives = _points(body.get("pos_points"), "pos_points", True, width, height)
    negatives = _points(body.get("neg_points"), "neg_points", False, width, height)
    if len(positives) + len(negatives) > MAX_PROMPTS:
        raise TooLarge(f"{len(positives) + len(negatives)} points; at most {MAX_PROMPTS}")
    box = _box(body.get("obj_bbox"), width, height)
    if not positives and not negatives and box is None:
        raise InvalidInput("no prompt: give pos_points, neg_points or obj_bbox")
    return InteractorRequest(image, hashlib.sha256(data).hexdigest(), positives, negatives, box)


def _points(value, name: str, positive: bool, width: int, height: int) -> tuple[Click, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput(f"'{name}' must be a list of [x, y] points")
    clicks = []
    for i, point in enumerate(value):
        x, y = _xy(point, f"{name}[{i}]")
        # CVAT's coordinates are continuous; pixel (c, r) covers [c, c + 1) x [r, r + 1)
        column, row = math.floor(x), math.floor(y)
        if not (0 <= column < width and 0 <= row < height):
            raise InvalidInput(f"{name}[{i}] ({x}, {y}) is outside the {width}x{height} frame")
        clicks.append(Click(x=column, y=row, positive=positive))
    return tuple(clicks)


def _xy(point, where: str) -> tuple[float, float]:
    if not (isinstance(point, (list, tuple)) and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in point)):
        raise InvalidInput(f"{where} is {point!r}; expected [x, y] with finite numbers")
    return float(point[0]), float(point[1])


def _box(value, width: int, height: int) -> Box | None:
    """obj_bbox as CVAT sends it, two corners [[x0, y0], [x1, y1]] (a flat [x0, y0, x1, y1]
    is taken too); null or [] means no box. Corners are put in order and clipped to the frame."""
    if value is None or value == []:
        return None
    if isinstance(value, list) and len(value) == 4:
        value = [value[:2], value[2:]]
    if not (isinstance(value, list) and len(value) == 2):
        raise InvalidInput(f"'obj_bbox' is {value!r}; expected [[x0, y0], [x1, y1]]")
    (ax, ay), (bx, by) = _xy(value[0], "obj_bbox[0]"), _xy(value[1], "obj_bbox[1]")
    x0, x1 = max(0.0, min(ax, bx)), min(float(width), max(ax, bx))
    y0, y1 = max(0.0, min(ay, by)), min(float(height), max(ay, by))
    if not (x0 < x1 and y0 < y1):
        raise InvalidInput(f"'obj_bbox' {value!r} covers no area of the {width}x{height} frame")
    return Box(x0, y0, x1, y1)


class ClickOrder:
    """The order in which each image's points first arrived (see the module docstring)."""

    def __init__(self, keep: int = REMEMBERED_IMAGES):
        self.keep = keep
        self._orders: OrderedDict[str, tuple[Box | None, list[Click]]] = OrderedDict()
        self._lock = threading.Lock()

    def ordered(self, request: InteractorRequest) -> list[Click]:
        """The request's clicks in their recovered order; remembers it for the next call."""
        with self._lock:
            box, previous = self._orders.get(request.image_key, (None, []))
            if box != request.box:
                previous = []  # another box: another object
            present = Counter(request.positives + request.negatives)
            order = []
            for click in previous:
                if present[click] > 0:
                    present[click] -= 1
                    order.append(click)
            for click in request.positives + request.negatives:
                if present[click] > 0:
                    present[click] -= 1
                    order.append(click)
            self._orders[request.image_key] = (request.box, order)
            self._orders.move_to_end(request.image_key)
            while len(self._orders) > self.keep:
                self._orders.popitem(last=False)
            return order


class Interactor:
    """The engine and the click orders of one function worker."""

    def __init__(self, engine: FocSAMEngine):
        self.engine = engine
        self.order = ClickOrder()
        self.replays = ReplayCache()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, model_dir: str | Path, threads: int | None = None) -> Interactor:
        return cls(FocSAMEngine.open(model_dir, threads=threads))

    def answer(self, body) -> dict:
        """CVAT's request body -> {"mask": (H, W) nested lists of 0 / 255}."""
        request = parse_request(body)
        prompts = ([request.box] if request.box is not None else []) + self.order.ordered(request)
        with self._lock:
            prediction = predict(self.engine, request.image, prompts, self.replays)
        return {"mask": (prediction.mask.astype(np.uint8) * 255).tolist()}
