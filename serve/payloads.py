"""The JSON bodies the API answers with, built from the labeller's objects in one place."""

from __future__ import annotations

import time

import numpy as np

from focsam_onnx.engine.click_session import ClickResult
from focsam_onnx.engine.prompts import prompts_to_json
from focsam_onnx.serve.annotations import SavedObject
from focsam_onnx.serve.labeller import Labeller, ObjectSession, OpenImage
from focsam_onnx.serve.mask_formats import encode_mask


def mask_json(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as row-major bits, most significant first, base64: H*W/8 bytes
    whatever the mask looks like (run lengths explode on a random-weights model's noise)."""
    return encode_mask(mask, "bits")


def result_json(result: ClickResult | None) -> dict | None:
    if result is None:
        return None
    return {"iou": result.iou_prediction, "decoded_on_refined": result.decoded_on_refined,
            "refiner_ran": result.refiner_ran,
            "engine_ms": round(result.timings_ms.get("total", 0.0), 2),
            "mask": mask_json(result.mask)}


def session_json(live: ObjectSession) -> dict:
    return {"session_id": live.id, "image": live.image, "object_id": live.object_id,
            "prompts": prompts_to_json(live.session.prompts),
            "result": result_json(live.session.result)}


def object_json(obj: SavedObject, with_mask: bool = True) -> dict:
    entry = {"object_id": obj.id, "version": obj.version, "prompts": prompts_to_json(obj.prompts),
             "area": obj.area, "bbox": list(obj.bbox), "iou": obj.predicted_iou}
    if with_mask:
        entry["mask"] = mask_json(obj.mask())
    return entry


def image_entry(labeller: Labeller, name: str) -> dict:
    """An image of the folder with its saved object count, or why its record is unreadable
    (that image alone is affected; the file is kept as it is)."""
    damaged = labeller.store.damaged(name)
    if damaged is not None:
        return {"name": name, "objects": None, "damaged": damaged}
    return {"name": name, "objects": len(labeller.store.objects(name))}


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
