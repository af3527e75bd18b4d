"""The one call every integration makes: an image and its ordered prompts -> FocSAM's mask.

FocSAM's answer is a function of the image and the prompts in the order they were given (the
refiner runs once, at the second step, on that step's coarse logits). The tools we plug into keep
no per-object state, so each request sends the whole prompt list, and `predict` is the only place
that replays it: through the engine's `ReplayCache`, which resumes from the longest prefix it
holds, so the n-th prompt of a growing list costs one decoder run, as a session click does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.prompts import Box, Click, Prompt
from focsam_onnx.engine.replay_cache import MAX_PROMPTS, ReplayCache
from focsam_onnx.errors import InvalidInput, TooLarge


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


def predict(engine: FocSAMEngine, image: np.ndarray, prompts: Sequence[Prompt],
            cache: ReplayCache) -> Prediction:
    """Replay `prompts` (Click: integer pixel x column, y row; Box: corners in pixels) in order
    on `image` ((H, W, 3) uint8 BGR) as one FocSAM object, refiner at upstream's step; `cache`
    holds earlier requests' prefixes (one per server, shared by its objects).

    A box is a step like a click (a later box replaces the earlier one). Raises InvalidInput
    for an empty list or a prompt outside the image, and TooLarge past MAX_PROMPTS; nothing is
    run before every prompt has been checked.
    """
    check_prompts(prompts, image.shape[1], image.shape[0])
    encoded = engine.open_image(image)
    replayed = cache.replay(engine, encoded, prompts)
    result = replayed.result
    return Prediction(result.mask, result.iou_prediction, result.decoded_on_refined,
                      replayed.steps, encoded.image_hash)


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
