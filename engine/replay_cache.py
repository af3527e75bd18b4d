"""Stateless prediction made as fast as a session: replays keyed by their prompt prefix.

FocSAM's mask is a deterministic function of the image and the ordered prompts, so a client
that sends the whole prompt list every time (Label Studio, CVAT, the HTTP predict endpoint)
gets exactly what a `ClickSession` gives for the same prompts. To make that as cheap as a
session click, the state after every prefix (the step's low-res logits and, from the refine
step on, the refined embeddings) is kept under a byte budget, least recently used first out:
the n-th prompt of a growing list then costs one decoder run.

Keys hold everything the state depends on: model id, encoder and click-graph precisions, image
hash, the refine step and the prompt prefix. The refined embeddings (4 MB) are shared by every
prefix after the refine step and counted once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from focsam_onnx.engine.click_session import (
    ClickResult,
    ClickSession,
    RefineAt,
    SessionState,
    resolve_refine_at,
)
from focsam_onnx.engine.focsam_engine import EncodedImage, FocSAMEngine
from focsam_onnx.engine.prompts import Prompt
from focsam_onnx.errors import InvalidInput

DEFAULT_BUDGET_BYTES = 256 << 20  # ~1,000 steps' logits, or ~50 objects' refined embeddings
MAX_PROMPTS = 200  # per request: far beyond a person's clicks on one object


@dataclass(frozen=True)
class Replayed:
    result: ClickResult  # the last prompt's
    steps: int  # prompts replayed in all
    cached_steps: int  # of which came from the cache (not decoded again)


class ReplayCache:
    """Session states by (model, precisions, image, refine step, prompt prefix), LRU by bytes."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        if budget_bytes < 0:
            raise InvalidInput(f"the replay cache budget must be >= 0 bytes, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._states: OrderedDict[tuple, SessionState] = OrderedDict()
        self._shared: dict[int, int] = {}  # id(refined embeddings) -> states holding them
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._states)

    def replay(self, engine: FocSAMEngine, image: EncodedImage, prompts: Sequence[Prompt],
               refine_at: RefineAt = "upstream") -> Replayed:
        """The result of `prompts` on `image`, bit for bit what a new `ClickSession` given the
        same prompts in order returns, resuming from the longest cached prefix."""
        prompts = tuple(prompts)
        if not prompts:
            raise InvalidInput("give at least one prompt (a click or a box)")
        if len(prompts) > MAX_PROMPTS:
            raise InvalidInput(f"{len(prompts)} prompts: at most {MAX_PROMPTS} per object")
        geometry = image.geometry
        for prompt in prompts:
            prompt.checked(geometry.width, geometry.height)
        step = resolve_refine_at(refine_at, engine.model.has_refiner)
        base = (engine.model.model_id, engine.model.precisions, image.image_hash, step)
        cached, state = self._longest(base, prompts)
        session = (ClickSession.resume(engine, image, state) if state is not None
                   else ClickSession(engine, image, step))
        for k in range(cached, len(prompts)):
            session.add(prompts[k])
            self._put(base + (prompts[:k + 1],), session.state())
        return Replayed(session.result, len(prompts), cached)

    def discard(self, engine: FocSAMEngine, image: EncodedImage, prompts: Sequence[Prompt],
                refine_at: RefineAt = "upstream") -> None:
        """Forget the state of exactly this prompt list (its prefixes stay)."""
        step = resolve_refine_at(refine_at, engine.model.has_refiner)
        key = (engine.model.model_id, engine.model.precisions, image.image_hash, step,
               tuple(prompts))
        with self._lock:
            state = self._states.pop(key, None)
            if state is not None:
                self._bytes -= self._cost(state, -1)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._shared.clear()
            self._bytes = 0

    def _longest(self, base: tuple, prompts: tuple) -> tuple[int, SessionState | None]:
        with self._lock:
            for k in range(len(prompts), 0, -1):
                state = self._states.get(base + (prompts[:k],))
                if state is not None:
                    self._states.move_to_end(base + (prompts[:k],))
                    return k, state
        return 0, None

    def _put(self, key: tuple, state: SessionState) -> None:
        # A copy of the result without its full-size mask: the cache holds logits only.
        state = dataclasses.replace(state, result=dataclasses.replace(state.result))
        with self._lock:
            if key in self._states:
                return
            self._states[key] = state
            self._bytes += self._cost(state, +1)
            while self._bytes > self.budget_bytes and self._states:
                _, old = self._states.popitem(last=False)
                self._bytes -= self._cost(old, -1)

    def _cost(self, state: SessionState, change: int) -> int:
        """Bytes `state` adds (change +1) or frees (-1): its logits, and the refined embeddings
        when it is the first (or last) state holding them."""
        nbytes = state.result.low_res_logits.nbytes
        if state.refined is None:
            return nbytes
        ident = id(state.refined[0])
        holders = self._shared.get(ident, 0) + change
        if holders:
            self._shared[ident] = holders
        else:
            self._shared.pop(ident, None)
        first_or_last = (change > 0 and holders == 1) or (change < 0 and holders == 0)
        return nbytes + (state.refined[0].nbytes if first_or_last else 0)
