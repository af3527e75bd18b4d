"""The one call every integration makes: an image and its ordered prompts -> FocSAM's mask.

FocSAM's answer is a function of the image and the prompts in the order they were given (the
refiner runs once, at the second step, on that step's coarse logits). The tools we plug into keep
no per-object state, so each request replays the whole prompt list. `predict` is the only place
that does it: a faster replay (a cache keyed by image and prompt prefix) changes this function and
nothing that calls it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import cv2
import numpy as np

from focsam_onnx.engine.click_session import replay
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.prompts import Box, Click, Prompt
from focsam_onnx.errors import InvalidInput, TooLarge

MAX_PROMPTS = 256  # far above a person's clicks on one object; bounds a request's work
MAX_PIXELS = 64_000_000  # as serve's image folder: refused from the header, before decoding


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
    """Replay `prompts` (Click: integer pixel x column, y row; Box: corners in pixels) in order
    on `image` ((H, W, 3) uint8 BGR) as one FocSAM object, refiner at upstream's step.

    A box is a step like a click (a later box replaces the earlier one). Raises InvalidInput
    for an empty list or a prompt outside the image, and TooLarge past MAX_PROMPTS; nothing is
    run before every prompt has been checked.
    """
    check_prompts(prompts, image.shape[1], image.shape[0])
    encoded = engine.open_image(image)
    session = replay(engine, encoded, prompts)
    result = session.result
    return Prediction(result.mask, result.iou_prediction, result.decoded_on_refined, session.steps,
                      encoded.image_hash)


def check_prompts(prompts: Sequence[Prompt], width: int, height: int) -> None:
    """InvalidInput (TooLarge past MAX_PROMPTS) unless every prompt fits a width x height image."""
    if not prompts:
        raise InvalidInput("no prompts: give at least one click or a box")
    if len(prompts) > MAX_PROMPTS:
        raise TooLarge(f"{len(prompts)} prompts for one object; at most {MAX_PROMPTS}")
    for i, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, Click | Box):
            raise InvalidInput(f"prompt {i}: {prompt!r} is neither a click nor a box")
        try:
            prompt.checked(width, height)
        except InvalidInput as err:
            raise InvalidInput(f"prompt {i}: {err}") from None


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
