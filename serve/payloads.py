"""The JSON bodies the API answers with, built from the labeller's objects in one place."""

from __future__ import annotations

import base64
import time

import cv2
import numpy as np

from focsam_onnx.engine.click_session import ClickResult
from focsam_onnx.engine.prompts import prompts_to_json
from focsam_onnx.serve.annotations import SavedObject
from focsam_onnx.serve.labeller import Labeller, ObjectSession, OpenImage

PREVIEW_PIXELS = 1 << 20  # a mask the page gets covers at most this many pixels


def mask_json(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as the page draws it, bounded whatever the image's size: the crop
    to its bounding box (`x`, `y`, `crop_width`, `crop_height`, image pixels) as a 1-bit PNG,
    base64, scaled down (area average, then > 0.5) to at most PREVIEW_PIXELS pixels: exact
    for objects of up to 1 MP, at worst ~1 MP / 8 = 128 KB of PNG (~175 KB in base64) even for
    noise. Full resolution is for saving and export (the record, mask.png)."""
    height, width = mask.shape
    body = {"format": "crop_png", "height": int(height), "width": int(width)}
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return {**body, "x": 0, "y": 0, "crop_width": 0, "crop_height": 0, "png": ""}
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = mask[y0:y1, x0:x1].astype(np.uint8) * 255
    scale = min(1.0, (PREVIEW_PIXELS / crop.size) ** 0.5)
    if scale < 1.0:
        size = (max(1, int((x1 - x0) * scale)), max(1, int((y1 - y0) * scale)))
        crop = np.where(cv2.resize(crop, size, interpolation=cv2.INTER_AREA) > 127, 255, 0)
    png = cv2.imencode(".png", crop.astype(np.uint8), [cv2.IMWRITE_PNG_BILEVEL, 1])[1]
    return {**body, "x": x0, "y": y0, "crop_width": x1 - x0, "crop_height": y1 - y0,
            "png": base64.b64encode(png.tobytes()).decode("ascii")}


def result_json(result: ClickResult | None, mask: np.ndarray | None = None) -> dict | None:
    """A prediction's figures and `mask` (default: its own; the page gets the object's mask,
    strokes applied). None when there is neither."""
    mask = mask if mask is not None else result.mask if result is not None else None
    if mask is None:
        return None
    if result is None:  # strokes alone
        return {"iou": 0.0, "decoded_on_refined": False, "refiner_ran": False,
                "engine_ms": 0.0, "mask": mask_json(mask)}
    return {"iou": result.iou_prediction, "decoded_on_refined": result.decoded_on_refined,
            "refiner_ran": result.refiner_ran,
            "engine_ms": round(result.timings_ms.get("total", 0.0), 2),
            "mask": mask_json(mask)}


def session_json(live: ObjectSession) -> dict:
    return {"session_id": live.id, "image": live.image, "object_id": live.object_id,
            "category_id": live.category_id,
            "prompts": prompts_to_json(live.session.prompts),
            "strokes": [s.to_json() for s in live.strokes],
            "result": result_json(live.session.result, live.mask())}


def object_json(obj: SavedObject, with_mask: bool = True) -> dict:
    entry = {"object_id": obj.id, "version": obj.version, "category_id": obj.category_id,
             "prompts": prompts_to_json(obj.prompts),
             "strokes": [s.to_json() for s in obj.strokes], "area": obj.area,
             "bbox": list(obj.bbox), "iou": obj.predicted_iou}
    if with_mask:
        entry["mask"] = mask_json(obj.mask())
    return entry


def image_entry(labeller: Labeller, name: str) -> dict:
    """An image of the folder with its saved object count and its progress (new, in progress,
    done), or why its record is unreadable (that image alone is affected; the file is kept as
    it is)."""
    done = labeller.store.is_done(name)
    damaged = labeller.store.damaged(name)
    if damaged is not None:
        return {"name": name, "objects": None, "damaged": damaged, "done": done}
    count = len(labeller.store.objects(name))
    return {"name": name, "objects": count, "done": done,
            "state": "done" if done else "in progress" if count else "new"}


def status_json(labeller: Labeller, entry: OpenImage) -> dict:
    encoded = entry.encoded
    return {"image": entry.name, "state": entry.state, "error": entry.error,
            "elapsed_s": round(time.monotonic() - entry.started, 2),
            "expected_s": labeller.expected_encode_seconds(),
            "width": int(entry.bgr.shape[1]) if entry.bgr is not None else None,
            "height": int(entry.bgr.shape[0]) if entry.bgr is not None else None,
            "from_cache": encoded.from_cache if encoded else None,
            "encode_s": round(encoded.seconds, 3) if encoded else None,
            "queue_position": (labeller.queue_position(entry.name)
                               if entry.state == "encoding" else None),
            "background": labeller.background()}
