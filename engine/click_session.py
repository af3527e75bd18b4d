"""One object's interaction: upstream FocSAM's per-object click protocol with undo.

Step t (0-based) decodes all clicks so far with the previous step's final low-res logits as the
mask prompt (none at t = 0). At t == refine_at (upstream: 1, the 2nd click) a coarse decode on
the ORIGINAL embeddings gives the ROI and the mask token, the refiner runs once, and this and
every later step decode on the refined embeddings. refine_at=None is the plain SAM baseline.
An interactive front end can be handed the coarse mask of the refine step before the refiner
runs (`on_interim`); it changes nothing in the session's state.

A box (`set_box`) is one more prompt of the object, sent with every later step's clicks as
segment-anything's predictor sends it (clicks, then the two corners, no padding point). Setting
it is a step like a click: a box-first interaction predicts from the box alone at step 0, and
the refiner runs at step `refine_at` as usual, its ROI taken from that step's coarse mask
(decoded from the box and the clicks), not from the box itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from focsam_onnx.engine.postprocess import logits_to_mask
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.roi import Roi
from focsam_onnx.engine.runtime import EncodedImage, FocSAMEngine

UPSTREAM_REFINE_STEP = 1


@dataclass(frozen=True)
class ClickResult:
    mask: np.ndarray  # (H, W) bool at the original image size
    low_res_logits: np.ndarray  # (1, 1, 256, 256), the next step's mask prompt
    iou_prediction: float
    refined: bool  # decoded on refined embeddings
    roi: Roi | None  # the refiner's ROI, set on the step that ran it
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _State:
    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1), original pixels
    prev_logits: np.ndarray | None = None
    refined_embeddings: np.ndarray | None = None
    result: ClickResult | None = None


InterimCallback = Callable[[ClickResult], None]


class ClickSession:
    """Clicks on one object of an encoded image. Methods return results and print nothing."""

    def __init__(self, engine: FocSAMEngine, image: EncodedImage,
                 refine_at: int | None = UPSTREAM_REFINE_STEP):
        if refine_at is not None and refine_at < 0:
            raise ValueError(f"refine_at must be >= 0 or None, got {refine_at}")
        if refine_at is not None and not engine.model.has_refiner:
            raise ValueError(f"{engine.model.path} has no refiner graph (a plain-SAM export); "
                             "run it without the refiner (refine_at=None; on the command line "
                             "segment --refine-at -1 or evaluate --mode sam)")
        self.engine = engine
        self.image = image
        self.refine_at = refine_at
        self._history: list[_State] = [_State()]

    @property
    def clicks(self) -> tuple[Click, ...]:
        return self._state.clicks

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        return self._state.box

    @property
    def steps(self) -> int:
        """Predictions made so far (a step may add no click, as in upstream's evaluation)."""
        return len(self._history) - 1

    @property
    def result(self) -> ClickResult | None:
        return self._state.result

    @property
    def _state(self) -> _State:
        return self._history[-1]

    def click(self, x: int, y: int, positive: bool = True,
              on_interim: InterimCallback | None = None) -> ClickResult:
        """Add a click at pixel (x, y) of the original image (column x, row y) and predict."""
        return self.step(self._validated(x, y, positive), on_interim)

    def set_box(self, x0: float, y0: float, x1: float, y1: float,
                on_interim: InterimCallback | None = None) -> ClickResult:
        """Set (or replace) the object's box, in original image pixels (x0, y0 top-left,
        x1, y1 bottom-right), and predict: one step, undone by `undo`."""
        return self._advance(self._state.clicks, self._validated_box(x0, y0, x1, y1),
                             on_interim)

    def step(self, click: Click | None,
             on_interim: InterimCallback | None = None) -> ClickResult:
        """One protocol step: add `click` (None: keep the clicks as they are) and predict.

        On the step that runs the refiner, `on_interim` is called first with the coarse
        (unrefined) result, so a user sees a mask while the refiner runs.
        """
        state = self._state
        return self._advance(state.clicks + ((click,) if click is not None else ()), state.box,
                             on_interim)

    def _advance(self, clicks: tuple[Click, ...], box: tuple[float, float, float, float] | None,
                 on_interim: InterimCallback | None) -> ClickResult:
        if not clicks and box is None:
            raise ValueError("the first step needs a click or a box")
        state = self._state
        result, refined = self._predict(clicks, box, state, on_interim)
        self._history.append(_State(clicks, box, result.low_res_logits, refined, result))
        return result

    def undo(self) -> ClickResult | None:
        """Restore the exact state before the last step; returns the result now current."""
        if self.steps == 0:
            raise ValueError("nothing to undo")
        self._history.pop()
        return self._state.result

    def reset(self) -> None:
        """Start the object over (the image embeddings stay cached)."""
        del self._history[1:]

    def _validated(self, x: int, y: int, positive: bool) -> Click:
        return validated_click(x, y, positive, self.image.geometry.width,
                               self.image.geometry.height)

    def _validated_box(self, x0: float, y0: float, x1: float,
                       y1: float) -> tuple[float, float, float, float]:
        geometry = self.image.geometry
        box = tuple(float(v) for v in (x0, y0, x1, y1))
        if not (0 <= box[0] < box[2] <= geometry.width
                and 0 <= box[1] < box[3] <= geometry.height):
            raise ValueError(f"box {box} must satisfy 0 <= x0 < x1 <= {geometry.width} and "
                             f"0 <= y0 < y1 <= {geometry.height} (the image's pixels)")
        return box

    def _predict(self, clicks: tuple[Click, ...], box: tuple[float, float, float, float] | None,
                 state: _State,
                 on_interim: InterimCallback | None) -> tuple[ClickResult, np.ndarray | None]:
        engine, timings = self.engine, {}
        geometry = self.image.geometry
        coords = geometry.to_network(np.array([c.xy for c in clicks], np.float64).reshape(-1, 2))
        labels = np.array([1.0 if c.positive else 0.0 for c in clicks], np.float32)
        net_box = None if box is None else geometry.to_network(
            np.array(box, np.float64).reshape(2, 2)).reshape(4)
        refined, roi = state.refined_embeddings, None
        if refined is None and self.refine_at is not None and self.steps == self.refine_at:
            start = time.perf_counter()
            coarse = engine.decode(self.image.embeddings, coords, labels, state.prev_logits,
                                   net_box)
            roi = engine.roi(coarse.low_res_logits)
            timings["coarse_decode"] = _ms_since(start)
            if on_interim is not None:
                on_interim(ClickResult(logits_to_mask(coarse.low_res_logits, self.image.geometry),
                                       coarse.low_res_logits, coarse.iou_prediction, False, roi,
                                       dict(timings)))
            start = time.perf_counter()
            refined = engine.refine(self.image.embeddings, coarse.mask_token, roi)
            timings["refine"] = _ms_since(start)
        start = time.perf_counter()
        embeddings = refined if refined is not None else self.image.embeddings
        decoded = engine.decode(embeddings, coords, labels, state.prev_logits, net_box)
        timings["decode"] = _ms_since(start)
        start = time.perf_counter()
        mask = logits_to_mask(decoded.low_res_logits, self.image.geometry)
        timings["postprocess"] = _ms_since(start)
        timings["total"] = sum(timings.values())
        result = ClickResult(mask, decoded.low_res_logits, decoded.iou_prediction,
                             refined is not None, roi, timings)
        return result, refined


def validated_click(x: int, y: int, positive: bool, width: int, height: int) -> Click:
    """A Click at integer pixel (x, y) of a width x height image; ValueError if it is outside."""
    if int(x) != x or int(y) != y:
        raise ValueError(f"click ({x}, {y}) must be integer pixel coordinates")
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"click (x={x}, y={y}) is outside the {width}x{height} image "
                         f"(valid: 0 <= x < {width}, 0 <= y < {height})")
    return Click(y=int(y), x=int(x), positive=bool(positive))


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
