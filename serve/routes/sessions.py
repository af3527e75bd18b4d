"""Object sessions: create or resume one, add clicks and boxes, undo, reset, its mask."""

from __future__ import annotations

import cv2
import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.errors import InvalidInput
from focsam_onnx.serve.click_events import prompt_stream
from focsam_onnx.serve.payloads import session_json
from focsam_onnx.serve.routes import LabellerDep, errors
from focsam_onnx.serve.strokes import MAX_POINTS, MAX_RADIUS, Stroke

router = APIRouter(prefix="/api/sessions")
NDJSON = {200: {"content": {"application/x-ndjson": {}}}}


class NewSession(BaseModel):
    image: str = Field(description="An image name from GET /api/images.")
    object_id: int | None = Field(None, description="Continue this saved object (its prompts "
                                                    "are replayed); omit for a new object.")
    category_id: int | None = Field(None, description="A new object's class (1-based, GET "
                                                      "/api/images `classes`); default 1.")


class ClickIn(BaseModel):
    x: int = Field(description="Column, in original image pixels (0 <= x < width).")
    y: int = Field(description="Row, in original image pixels (0 <= y < height).")
    positive: bool = Field(True, description="True: on the object; False: background.")


class BoxIn(BaseModel):
    x0: float = Field(description="Left edge, original image pixels.")
    y0: float = Field(description="Top edge.")
    x1: float = Field(description="Right edge (> x0, <= width).")
    y1: float = Field(description="Bottom edge (> y0, <= height).")


@router.post("", responses=errors(400, 404, 409, 413, 422, 429, 503))
async def new_session(labeller: LabellerDep, body: NewSession):
    """A session on a new object, or on a saved one (`object_id`)."""
    live = await labeller.run(labeller.new_session, body.image, body.object_id,
                              body.category_id)
    return session_json(live)


@router.get("/{session_id}", responses=errors(404))
def get_session(labeller: LabellerDep, session_id: str):
    """The session's prompts and current result."""
    return session_json(labeller.session(session_id))


@router.post("/{session_id}/clicks", responses={**NDJSON, **errors(400, 404, 409, 413, 422)})
async def add_click(labeller: LabellerDep, session_id: str, click: ClickIn):
    """Add a click. Answers newline-delimited JSON: on the refine step an `interim` event
    (the unrefined mask), then the `final` event, then `saved` once the mask and
    annotations.json are on disk; an `error` event if anything failed after the first."""
    return await prompt_stream(labeller, labeller.session(session_id),
                               Click(click.x, click.y, click.positive))


@router.post("/{session_id}/box", responses={**NDJSON, **errors(400, 404, 409, 413, 422)})
async def set_box(labeller: LabellerDep, session_id: str, box: BoxIn):
    """Set (or replace) the object's box; answers like a click."""
    return await prompt_stream(labeller, labeller.session(session_id),
                               Box(box.x0, box.y0, box.x1, box.y1))


class StrokeIn(BaseModel):
    points: list[tuple[int, int]] = Field(min_length=1, max_length=MAX_POINTS,
                                          description="[x, y] image pixels, in drawing order.")
    radius: int = Field(ge=0, le=MAX_RADIUS, description="The pen's radius, image pixels.")
    erase: bool = Field(False, description="True: eraser (clear); false: brush (paint).")


@router.post("/{session_id}/strokes", responses=errors(400, 404, 409, 413, 422))
async def add_stroke(labeller: LabellerDep, session_id: str, body: StrokeIn):
    """Paint (brush) or clear (eraser) along the points, after the object's prompts; saved
    with the object and replayed with it; undo removes it. Answers the session's new state."""
    live = labeller.session(session_id)
    await labeller.run_in_session(live, labeller.add_stroke, live,
                                  Stroke(tuple(body.points), body.radius, body.erase))
    return session_json(live)


@router.post("/{session_id}/undo", responses=errors(400, 404, 409))
async def undo(labeller: LabellerDep, session_id: str):
    """Undo the last prompt or stroke (400 when there is none); answers the session's new
    state."""
    live = labeller.session(session_id)
    await labeller.run_in_session(live, labeller.undo, live)
    return session_json(live)


@router.post("/{session_id}/reset", responses=errors(404, 409))
async def reset(labeller: LabellerDep, session_id: str):
    """Remove every prompt of the object (its saved mask too); the session stays."""
    live = labeller.session(session_id)
    await labeller.run_in_session(live, labeller.reset, live)
    return session_json(live)


@router.get("/{session_id}/mask.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **errors(400, 404)})
def session_mask(labeller: LabellerDep, session_id: str):
    """The session's current mask as PNG (255/0, original size; strokes applied)."""
    mask = labeller.session(session_id).mask()
    if mask is None:
        raise InvalidInput("the session has no prompts or strokes yet")
    return Response(cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes(),
                    media_type="image/png")
