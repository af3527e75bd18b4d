"""The stateless click API: the image by content hash, the ordered prompts, and the mask.

For tools that keep no per-object state (Label Studio, CVAT, scripts): every request carries
the object's whole prompt list, and the answer is pixel for pixel what a session given the
same prompts in order would show, refiner included. The server keeps each prefix's state
(`engine/replay_cache.py`), so the n-th prompt of a growing list costs one decoder run.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.engine.replay_cache import MAX_PROMPTS
from focsam_onnx.errors import InvalidInput
from focsam_onnx.serve.images import UploadTooLarge
from focsam_onnx.serve.mask_formats import MaskFormat, encode_mask
from focsam_onnx.serve.routes import LabellerDep, errors

router = APIRouter(prefix="/api/predict", tags=["stateless"])
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


class ClickPrompt(BaseModel):
    x: int = Field(description="Column, original image pixels (0 <= x < width).")
    y: int = Field(description="Row, original image pixels (0 <= y < height).")
    positive: bool = Field(True, description="True: on the object; False: background.")


class BoxPrompt(BaseModel):
    box: tuple[float, float, float, float] = Field(
        description="[x0, y0, x1, y1]: top-left and bottom-right corners, original pixels.")


class PredictIn(BaseModel):
    image: str = Field(description="The `image_hash` POST /api/predict/images answered, or an "
                                   "image name from GET /api/images.")
    prompts: list[ClickPrompt | BoxPrompt] = Field(
        min_length=1, max_length=MAX_PROMPTS,
        description="The object's clicks and boxes in the order they were given.")
    refine_at: int | Literal["upstream"] | None = Field(
        "upstream", description="The step where the refiner runs: 'upstream' (the 2nd prompt, "
                                "where the model has a refiner), a step, or null for none.")
    encoder_precision: str | None = Field(
        None, description="If given, must be the server's (GET /api/health); a guard against "
                          "comparing masks of different precisions.")
    click_precision: str | None = Field(
        None, description="If given, must be the server's decoder and refiner precision (GET "
                          "/api/health; serve --click-precision): the same guard.")
    mask_format: MaskFormat = Field("rle", description="rle (COCO), png (base64), polygons, "
                                                       "or bits (packed, base64).")


@router.post("/images", openapi_extra=UPLOAD_BODY, responses=errors(400, 413))
async def upload(labeller: LabellerDep, request: Request):
    """Decode and encode an image (the raw file as the body); answers its content hash."""
    limit = labeller.folder.max_upload_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise UploadTooLarge(f"upload is over the limit of {limit} bytes")
    encoded = await labeller.run(labeller.add_image_bytes, bytes(data))
    geometry = encoded.geometry
    return {"image_hash": encoded.image_hash, "width": geometry.width,
            "height": geometry.height, "from_cache": encoded.from_cache}


@router.post("", responses=errors(400, 404, 413, 422, 503))
async def predict(labeller: LabellerDep, body: PredictIn):
    """The mask of the ordered prompts, the decoder's IoU estimate, and whether it was decoded
    on the refined embeddings (the refiner ran for this object at its refine step)."""
    start = time.perf_counter()
    precision = labeller.engine.model.encoder_precision
    if body.encoder_precision not in (None, precision):
        raise InvalidInput(f"this server encodes with {precision}, not "
                           f"{body.encoder_precision}")
    click_precision = labeller.engine.model.click_precision
    if body.click_precision not in (None, click_precision):
        raise InvalidInput(f"this server decodes and refines in {click_precision}, not "
                           f"{body.click_precision}")
    prompts = [Box(*p.box) if isinstance(p, BoxPrompt) else Click(p.x, p.y, p.positive)
               for p in body.prompts]
    done = await labeller.run(labeller.predict, body.image, prompts, body.refine_at)
    result = done.result
    return {"image": body.image, "encoder_precision": precision,
            "click_precision": click_precision, "steps": done.steps,
            "cached_steps": done.cached_steps, "iou": result.iou_prediction,
            "decoded_on_refined": result.decoded_on_refined,
            "mask": encode_mask(result.mask, body.mask_format),
            "server_ms": round((time.perf_counter() - start) * 1000, 2)}
