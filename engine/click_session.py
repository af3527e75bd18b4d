"""One object's interaction: upstream FocSAM's per-object click protocol with undo.

Step t (0-based) decodes all clicks so far with the previous step's final low-res logits as the
mask prompt (none at t = 0). At t == refine_at (upstream: 1, the 2nd click) a coarse decode on
the ORIGINAL embeddings gives the ROI and the mask token, the refiner runs once, and this and
every later step decode on the refined embeddings. refine_at=None is the plain SAM baseline.
The step is decided here and nowhere else: `refine_at="upstream"` (the default) means step 1
when the model has a refiner and none for a plain-SAM export. An interactive front end can be
handed the coarse mask of the refine step before the refiner runs (`on_interim`); it changes
nothing in the session's state.

A box (`set_box`) is one more prompt of the object, sent with every later step's clicks as
segment-anything's predictor sends it (clicks, then the two corners, no padding point). Setting
it is a step like a click: a box-first interaction predicts from the box alone at step 0, and
the refiner runs at step `refine_at` as usual, its ROI taken from that step's coarse mask
(decoded from the box and the clicks), not from the box itself.

The result is a deterministic function of the image and the ordered prompts, so `replay` is the
one way to turn a prompt list into a result (the CLI, serve's restore, the stateless API), and
`state()` / `resume()` let a caller continue from a cached prefix: the state after k prompts is
the refined embeddings and the k-th step's logits, nothing else.

Memory stays flat however long the session: a step keeps its clicks count and its low-res
logits (256 KB), never a full-size mask (`ClickResult.mask` is computed on access and kept only
while the result is current). Logits are kept for the newest KEEP steps and for every KEEP-th
step before them; undoing into an older step replays its decodes from the nearest kept one (at
most KEEP - 1 decodes, bit-identical: the same graph on the same inputs), so 1,000 clicks hold
62 logits, not 1,000.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from focsam_onnx.engine.focsam_engine import EncodedImage, FocSAMEngine
from focsam_onnx.engine.postprocess import logits_to_mask
from focsam_onnx.engine.preprocess import ImageGeometry
from focsam_onnx.engine.prompts import Box, Click, Prompt
from focsam_onnx.engine.roi import Roi
from focsam_onnx.errors import InvalidInput

UPSTREAM_REFINE_STEP = 1
KEEP = 32  # ~sqrt(1,000): logits held and decodes replayed per undo balance at long sessions
RefineAt = int | None | Literal["upstream"]


def resolve_refine_at(refine_at: RefineAt, has_refiner: bool) -> int | None:
    """The step the refiner runs at: "upstream" is upstream's step where there is a refiner and
    none otherwise; an explicit step needs a refiner; None is plain SAM."""
    if refine_at == "upstream":
        return UPSTREAM_REFINE_STEP if has_refiner else None
    if refine_at is not None and (isinstance(refine_at, bool) or not isinstance(refine_at, int)
                                  or refine_at < 0):
        raise InvalidInput(f"refine_at must be a step >= 0, None or 'upstream', got {refine_at!r}")
    if refine_at is not None and not has_refiner:
        raise InvalidInput("this model has no refiner graph (a plain-SAM export); run it without "
                           "the refiner (refine_at=None; on the command line segment "
                           "--refine-at -1 or evaluate --mode sam)")
    return refine_at


@dataclass(frozen=True)
class ClickResult:
    low_res_logits: np.ndarray  # (1, 1, 256, 256), the next step's mask prompt
    iou_prediction: float
    decoded_on_refined: bool  # decoded on the refined embeddings (this step or an earlier ran it)
    roi: Roi | None  # the refiner's ROI, set on the step that ran it
    geometry: ImageGeometry
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def refiner_ran(self) -> bool:
        """The refiner ran on this step (once per object, at the refine step)."""
        return self.roi is not None

    @cached_property
    def mask(self) -> np.ndarray:
        """(H, W) bool at the original image size, computed from the logits on first access.

        A session lets only its current result keep the array (it is H x W bytes, the logits
        256 KB): an older result recomputes it when asked again.
        """
        return logits_to_mask(self.low_res_logits, self.geometry)

    def _forget_mask(self) -> None:
        self.__dict__.pop("mask", None)  # where cached_property keeps it


InterimCallback = Callable[[ClickResult], None]
StepObserver = Callable[[Prompt | None, ClickResult], None]  # (what the step added, its result)
DecoderPrompt = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # coords, labels, box


@dataclass
class _Step:
    n_clicks: int  # this step decoded clicks[:n_clicks]
    box: Box | None
    added: Prompt | None  # what the step added (None: a step that repeats the prediction)
    result: ClickResult | None  # None once dropped (see the module docstring)


@dataclass(frozen=True)
class SessionState:
    """A session after some steps, enough to continue it exactly: the clicks, each step's prompt
    (for undo), the last result and the refined embeddings with their ROI once made."""

    refine_at: int | None
    clicks: tuple[Click, ...]
    steps: tuple[tuple[int, Box | None, Prompt | None], ...]
    result: ClickResult
    refined: tuple[np.ndarray, Roi] | None

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        return tuple(added for _, _, added in self.steps if added is not None)

    @property
    def nbytes(self) -> int:
        """The arrays it holds (the refined embeddings are often shared with other states)."""
        refined = self.refined[0].nbytes if self.refined is not None else 0
        return self.result.low_res_logits.nbytes + refined


class ClickSession:
    """Prompts on one object of an encoded image. Methods return results and print nothing."""

    def __init__(self, engine: FocSAMEngine, image: EncodedImage,
                 refine_at: RefineAt = "upstream"):
        self.engine = engine
        self.image = image
        self.refine_at = resolve_refine_at(refine_at, engine.model.has_refiner)
        self._clicks: list[Click] = []
        self._steps: list[_Step] = []
        self._refined: tuple[np.ndarray, Roi] | None = None  # made once, at step refine_at

    @classmethod
    def resume(cls, engine: FocSAMEngine, image: EncodedImage,
               state: SessionState) -> ClickSession:
        """A session continuing `state` (made by `state()` on the same model and image)."""
        session = cls(engine, image, state.refine_at)
        session._clicks = list(state.clicks)
        session._steps = [_Step(n, box, added, None) for n, box, added in state.steps]
        session._steps[-1].result = state.result
        session._refined = state.refined
        return session

    def state(self) -> SessionState:
        """What `resume` needs to continue from here; raises InvalidInput before any step."""
        if not self._steps:
            raise InvalidInput("a session without steps has no state to keep")
        return SessionState(self.refine_at, tuple(self._clicks),
                            tuple((s.n_clicks, s.box, s.added) for s in self._steps),
                            self.result, self._refined)

    @property
    def clicks(self) -> tuple[Click, ...]:
        return tuple(self._clicks)

    @property
    def box(self) -> Box | None:
        return self._steps[-1].box if self._steps else None

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        """The clicks and boxes given so far, in order."""
        return tuple(s.added for s in self._steps if s.added is not None)

    @property
    def steps(self) -> int:
        """Predictions made so far (a step may add no click, as in upstream's evaluation)."""
        return len(self._steps)

    @property
    def result(self) -> ClickResult | None:
        return self._steps[-1].result if self._steps else None

    def click(self, x: int, y: int, positive: bool = True,
              on_interim: InterimCallback | None = None) -> ClickResult:
        """Add a click at pixel (x, y) of the original image (column x, row y) and predict."""
        if isinstance(x, bool) or isinstance(y, bool) or int(x) != x or int(y) != y:
            raise InvalidInput(f"click ({x}, {y}) must be integer pixel coordinates")
        return self.add(Click(int(x), int(y), bool(positive)), on_interim)

    def set_box(self, x0: float, y0: float, x1: float, y1: float,
                on_interim: InterimCallback | None = None) -> ClickResult:
        """Set (or replace) the object's box, in original image pixels (x0, y0 top-left,
        x1, y1 bottom-right), and predict: one step, undone by `undo`."""
        return self.add(Box(float(x0), float(y0), float(x1), float(y1)), on_interim)

    def add(self, prompt: Prompt, on_interim: InterimCallback | None = None) -> ClickResult:
        """One step adding `prompt` (a Click, or a Box replacing the object's box)."""
        geometry = self.image.geometry
        prompt = prompt.checked(geometry.width, geometry.height)
        if isinstance(prompt, Box):
            return self._advance(None, prompt, prompt, on_interim)
        return self._advance(prompt, self.box, prompt, on_interim)

    def replay(self, prompts: Iterable[Prompt],
               observer: StepObserver | None = None) -> ClickResult | None:
        """Add `prompts` in order, one step each; `observer(prompt, result)` sees every step.
        Returns the last result (the current one if `prompts` is empty)."""
        for prompt in prompts:
            result = self.add(prompt)
            if observer is not None:
                observer(prompt, result)
        return self.result

    def step(self, click: Click | None,
             on_interim: InterimCallback | None = None) -> ClickResult:
        """One protocol step: add `click` (None: keep the prompts as they are) and predict.

        On the step that runs the refiner, `on_interim` is called first with the coarse
        (unrefined) result, so a user sees a mask while the refiner runs.
        """
        if click is not None:
            geometry = self.image.geometry
            click = click.checked(geometry.width, geometry.height)
        return self._advance(click, self.box, click, on_interim)

    def _advance(self, click: Click | None, box: Box | None, added: Prompt | None,
                 on_interim: InterimCallback | None) -> ClickResult:
        if click is None and not self._clicks and box is None:
            raise InvalidInput("the first step needs a click or a box")
        start = time.perf_counter()
        if click is not None:
            self._clicks.append(click)
        if self._steps:
            self.result._forget_mask()
        try:
            result = self._predict(box, on_interim)
        except BaseException:  # a failed step (or callback) leaves the session as it was
            if click is not None:
                self._clicks.pop()
            if self.refine_at is not None and self.steps <= self.refine_at:
                self._refined = None
            raise
        result.timings_ms["step"] = _ms_since(start)
        self._steps.append(_Step(len(self._clicks), box, added, result))
        self._drop_old_logits()
        return result

    def undo(self) -> ClickResult | None:
        """Restore the exact state before the last step; returns the result now current."""
        if not self._steps:
            raise InvalidInput("nothing to undo")
        self._steps.pop()
        del self._clicks[self._steps[-1].n_clicks if self._steps else 0:]
        if self.refine_at is not None and self.steps <= self.refine_at:
            self._refined = None  # undoing the refine step forgets its embeddings
        if self._steps and self._steps[-1].result is None:
            self._replay_dropped()
        return self.result

    def reset(self) -> None:
        """Start the object over, releasing the history (the image embeddings stay cached)."""
        self._clicks, self._steps, self._refined = [], [], None

    def _decoder_prompt(self, n_clicks: int, box: Box | None) -> DecoderPrompt:
        """The first `n_clicks` clicks and the box in the network frame: (N, 2) (x, y) coords,
        (N,) labels, (4,) box or None."""
        geometry, clicks = self.image.geometry, self._clicks[:n_clicks]
        coords = geometry.to_network(np.array([c.xy for c in clicks], np.float64).reshape(-1, 2))
        labels = np.array([c.label for c in clicks], np.float32)
        net_box = None if box is None else geometry.to_network(
            np.array(box.corners, np.float64).reshape(2, 2)).reshape(4)
        return coords, labels, net_box

    def _predict(self, box: Box | None, on_interim: InterimCallback | None) -> ClickResult:
        """The next step (number self.steps) on the current prompt; runs the refiner if due."""
        prompt, timings, roi = self._decoder_prompt(len(self._clicks), box), {}, None
        prev_logits = self.result.low_res_logits if self._steps else None
        if self._refined is None and self.refine_at is not None and self.steps == self.refine_at:
            self._refined = self._refine(prompt, prev_logits, timings, on_interim)
            roi = self._refined[1]
        return self._decode(prompt, prev_logits, self._refined is not None, roi, timings)

    def _refine(self, prompt: DecoderPrompt, prev_logits: np.ndarray | None,
                timings: dict[str, float],
                on_interim: InterimCallback | None) -> tuple[np.ndarray, Roi]:
        """Coarse decode on the original embeddings -> ROI and mask token -> refined embeddings."""
        start = time.perf_counter()
        coords, labels, box = prompt
        coarse = self.engine.decode(self.image.embeddings, coords, labels, prev_logits, box)
        roi = self.engine.roi(coarse.low_res_logits)
        timings["coarse_decode"] = _ms_since(start)
        if on_interim is not None:
            on_interim(ClickResult(coarse.low_res_logits, coarse.iou_prediction, False, roi,
                                   self.image.geometry, dict(timings)))
        start = time.perf_counter()
        refined = self.engine.refine(self.image.embeddings, coarse.mask_token, roi)
        timings["refine"] = _ms_since(start)
        return refined, roi

    def _decode(self, prompt: DecoderPrompt, prev_logits: np.ndarray | None, refined: bool,
                roi: Roi | None, timings: dict[str, float]) -> ClickResult:
        start = time.perf_counter()
        embeddings = self._refined[0] if refined else self.image.embeddings
        coords, labels, box = prompt
        decoded = self.engine.decode(embeddings, coords, labels, prev_logits, box)
        timings["decode"] = _ms_since(start)
        timings["total"] = sum(timings.values())
        return ClickResult(decoded.low_res_logits, decoded.iou_prediction, refined, roi,
                           self.image.geometry, timings)

    def _drop_old_logits(self) -> None:
        """Keep the newest KEEP results whole, and every KEEP-th one before them."""
        number = len(self._steps) - KEEP  # 1-based number of the step leaving the window
        if number > 0 and number % KEEP:
            self._steps[number - 1].result = None

    def _replay_dropped(self) -> None:
        """Recompute the dropped results after the nearest kept one, up to the current step.

        Each replayed step decodes exactly what it decoded first (same clicks, same mask prompt,
        same embeddings: the refined ones are kept), so its logits are the same bits.
        """
        last = len(self._steps) - 1
        start = next((i for i in range(last - 1, -1, -1) if self._steps[i].result is not None), -1)
        for i in range(start + 1, last + 1):
            prev_logits = self._steps[i - 1].result.low_res_logits if i > 0 else None
            refined = self.refine_at is not None and i >= self.refine_at
            roi = self._refined[1] if refined and i == self.refine_at else None
            step = self._steps[i]
            step.result = self._decode(self._decoder_prompt(step.n_clicks, step.box),
                                       prev_logits, refined, roi, {})


def replay(engine: FocSAMEngine, image: EncodedImage, prompts: Iterable[Prompt],
           refine_at: RefineAt = "upstream",
           observer: StepObserver | None = None) -> ClickSession:
    """A new session on `image` with `prompts` added in order (see `ClickSession.replay`)."""
    session = ClickSession(engine, image, refine_at)
    session.replay(prompts, observer)
    return session


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
