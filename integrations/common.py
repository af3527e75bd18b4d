"""The one call every integration makes: an image and its ordered prompts -> FocSAM's mask.

FocSAM's answer is a function of the image and the prompts in the order they were given (the
refiner runs once, at the second step, on that step's coarse logits). The tools we plug into keep
no per-object state, so each request replays the whole prompt list. `predict` is the only place
that does it: a faster replay (a cache keyed by image and prompt prefix) changes this function and
nothing that calls it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import cv2
import numpy as np

from focsam_onnx.engine.click_session import UPSTREAM_REFINE_STEP, ClickSession, validated_click
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.runtime import FocSAMEngine
from focsam_onnx.errors import InvalidInput, TooLarge

MAX_PROMPTS = 256  # far above a person's clicks on one object; bounds a request's work
MAX_PIXELS = 64_000_000  # as serve's image folder: refused from the header, before decoding


@dataclass(frozen=True)
class BoxPrompt:
    """A box in original-image pixels: (x0, y0) top-left, (x1, y1) bottom-right corner."""

    x0: float
    y0: float
    x1: float
    y1: float


Prompt = Click | BoxPrompt  # Click: (x column, y row) integer pixels, positive or negative


@dataclass(frozen=True)
class Prediction:
    """The mask after the last prompt.

    mask: (H, W) bool at the image's size; iou_prediction: the decoder's IoU estimate;
    refined: the last step decoded on the refiner's embeddings (FocSAM from the 2nd step on);
    steps: prompts replayed; image_hash: the engine's content hash of the image.
    """

    mask: np.ndarray
    iou_prediction: float
    refined: bool
    steps: int
    image_hash: str


def predict(engine: FocSAMEngine, image: np.ndarray, prompts: Sequence[Prompt]) -> Prediction:
    """Replay `prompts` in order on `image` ((H, W, 3) uint8 BGR) as one FocSAM object.

    A box is a step like a click (a later box replaces the earlier one, as `set_box` does).
    Raises InvalidInput for an empty list, a click outside the image or a malformed box, and
    TooLarge past MAX_PROMPTS; nothing is run before every prompt has been checked.
    """
    check_prompts(prompts, image.shape[1], image.shape[0])
    encoded = engine.open_image(image)
    refine_at = UPSTREAM_REFINE_STEP if engine.model.has_refiner else None
    session = ClickSession(engine, encoded, refine_at)
    for prompt in prompts:
        if isinstance(prompt, BoxPrompt):
            result = session.set_box(prompt.x0, prompt.y0, prompt.x1, prompt.y1)
        else:
            result = session.click(prompt.x, prompt.y, prompt.positive)
    return Prediction(result.mask, result.iou_prediction, result.refined, session.steps,
                      encoded.image_hash)


def check_prompts(prompts: Sequence[Prompt], width: int, height: int) -> None:
    """InvalidInput (TooLarge past MAX_PROMPTS) unless every prompt fits a width x height image."""
    if not prompts:
        raise InvalidInput("no prompts: give at least one click or a box")
    if len(prompts) > MAX_PROMPTS:
        raise TooLarge(f"{len(prompts)} prompts for one object; at most {MAX_PROMPTS}")
    for i, prompt in enumerate(prompts, 1):
        if isinstance(prompt, BoxPrompt):
            box = (prompt.x0, prompt.y0, prompt.x1, prompt.y1)
            if not all(math.isfinite(v) for v in box):
                raise InvalidInput(f"prompt {i}: box {box} has a coordinate that is not a number")
            if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
                raise InvalidInput(f"prompt {i}: box {box} must satisfy 0 <= x0 < x1 <= {width} "
                                   f"and 0 <= y0 < y1 <= {height} (the image's pixels)")
        elif isinstance(prompt, Click):
            try:
                validated_click(prompt.x, prompt.y, prompt.positive, width, height)
            except ValueError as err:
                raise InvalidInput(f"prompt {i}: {err}") from None
        else:
            raise InvalidInput(f"prompt {i}: {prompt!r} is neither a click nor a box")


def decode_image(data: bytes, what: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 BGR, EXIF orientation applied (as a browser
    shows it). The pixel count is checked from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the size is compared with our own limit below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as header:
                width, height = header.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise InvalidInput(f"{what} is not a readable image: {err}") from None
    if width * height > max_pixels:
        raise TooLarge(f"{what} is {width}x{height}; at most {max_pixels:,} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidInput(f"{what} could not be decoded by OpenCV")
    return image
