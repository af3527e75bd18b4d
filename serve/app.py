"""The HTTP face of the labeller: a FastAPI app (OpenAPI page at /docs) and the static page.

Bad requests get a 4xx with a one-line message (ValueError 400, LookupError 404, an upload over
the limit 413); anything unexpected is logged and answered 500 with a message, never a
traceback. A click answers with newline-delimited JSON events: on the refine step an `interim`
event (the unrefined mask) comes before the `final` one, and `saved` ends the answer once the
click is on disk (killing the server loses at most a click whose answer has not ended).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from focsam_onnx.engine.click_session import ClickResult
from focsam_onnx.serve.annotations import SavedObject, mask_file
from focsam_onnx.serve.auth import AccessGuard
from focsam_onnx.serve.images import UploadTooLarge
from focsam_onnx.serve.labeller import Labeller, LabellerSettings, ObjectSession, OpenImage

log = logging.getLogger(__name__)
STATIC = resources.files("focsam_onnx.serve") / "static"


class NewSession(BaseModel):
    image: str = Field(description="An image name from GET /api/images.")
    object_id: int | None = Field(None, description="Continue this saved object (its clicks "
                                                    "are replayed); omit for a new object.")


class ClickIn(BaseModel):
    x: int = Field(description="Column, in original image pixels (0 <= x < width).")
    y: int = Field(description="Row, in original image pixels (0 <= y < height).")
    positive: bool = Field(True, description="True: on the object; False: background.")


def mask_json(mask: np.ndarray) -> dict:
    """An (H, W) bool mask as row-major bits, most significant first, base64: H*W/8 bytes
    whatever the mask looks like (run lengths explode on a random-weights model's noise)."""
    bits = base64.b64encode(np.packbits(mask.ravel()).tobytes()).decode("ascii")
    return {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "bits": bits}


def _result_json(result: ClickResult | None) -> dict | None:
    if result is None:
        return None
    return {"iou": result.iou_prediction, "refined": result.refined,
            "refiner_ran": result.roi is not None,
            "engine_ms": round(result.timings_ms.get("total", 0.0), 2),
            "mask": mask_json(result.mask)}


def _session_json(live: ObjectSession) -> dict:
    return {"session_id": live.id, "image": live.image, "object_id": live.object_id,
            "clicks": [[c.x, c.y, c.positive] for c in live.session.clicks],
            "result": _result_json(live.session.result)}


def _object_json(obj: SavedObject, with_mask: bool = True) -> dict:
    entry = {"object_id": obj.id, "clicks": [list(c) for c in obj.clicks], "area": obj.area,
             "bbox": list(obj.bbox), "iou": obj.predicted_iou}
    if with_mask:
        entry["mask"] = mask_json(obj.mask())
    return entry


def _status_json(labeller: Labeller, entry: OpenImage) -> dict:
    encoded = entry.encoded
    return {"image": entry.name, "state": entry.state, "error": entry.error,
            "elapsed_s": round(time.monotonic() - entry.started, 2),
            "expected_s": labeller.expected_encode_seconds(),
            "width": int(entry.bgr.shape[1]) if entry.bgr is not None else None,
            "height": int(entry.bgr.shape[0]) if entry.bgr is not None else None,
            "from_cache": encoded.from_cache if encoded else None,
            "encode_s": round(encoded.seconds, 3) if encoded else None,
            "background": labeller.queue.snapshot() if labeller.queue else None}


def create_app(settings: LabellerSettings, token: str | None = None) -> FastAPI:
    """The app for `settings`; with `token`, every request must carry it (see serve.auth)."""
    labeller = Labeller(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        labeller.start()
        try:
            yield
        finally:
            labeller.close()

    app = FastAPI(title="focsam-onnx serve", lifespan=lifespan,
                  description="Interactive segmentation with FocSAM: open an image, click, "
                              "and the masks are saved under the server's --out folder.")
    app.state.labeller = labeller
    app.add_middleware(AccessGuard, token=token)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/api/health")
    def health():
        """The model being served."""
        model = labeller.engine.model
        return {"ok": True, "variant": model.variant, "model_id": model.model_id,
                "refine_at": labeller.refine_at, "images": str(labeller.folder.root),
                "out": str(labeller.store.out)}

    @app.get("/api/images")
    def list_images():
        """The folder's images, with their saved object counts."""
        return {"images": [{"name": n, "objects": len(labeller.store.objects(n))}
                           for n in labeller.folder.names()],
                "background": labeller.queue.snapshot() if labeller.queue else None}

    @app.post("/api/images", openapi_extra={"requestBody": {
        "required": True, "content": {"image/*": {"schema": {"type": "string",
                                                              "format": "binary"}}}}})
    async def upload_image(request: Request, filename: str = "upload.png"):
        """Add an image to the folder: the raw file as the body, `?filename=` its name."""
        limit = labeller.folder.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise UploadTooLarge(f"upload of {declared} bytes is over the limit of {limit} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise UploadTooLarge(f"upload is over the limit of {limit} bytes")
        return {"image": labeller.folder.save_upload(filename, bytes(data))}

    @app.post("/api/images/{name}/open")
    def open_image(name: str):
        """Start encoding the image (in the background) and pre-encoding the next ones."""
        return _status_json(labeller, labeller.open(name))

    @app.get("/api/images/{name}/status")
    def image_status(name: str):
        """Encoding state: encoding | ready | error, elapsed and expected seconds."""
        return _status_json(labeller, labeller.status(name))

    @app.get("/api/images/{name}/image", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def image_pixels(name: str):
        """The pixels the engine segments (EXIF orientation applied), as PNG."""
        return Response(labeller.image_png(name), media_type="image/png")

    @app.get("/api/images/{name}/objects")
    def list_objects(name: str, masks: bool = True):
        """The saved objects of the image (masks as base64 row-major bits)."""
        return {"image": name,
                "objects": [_object_json(o, masks) for o in labeller.objects(name)]}

    @app.get("/api/images/{name}/objects/{object_id}/mask.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def object_mask(name: str, object_id: int):
        """A saved object's mask: PNG at the original size, 255 object, 0 background."""
        labeller.folder.path(name)
        labeller.store.get(name, object_id)
        path = labeller.store.folder(name) / mask_file(object_id)
        return Response(path.read_bytes(), media_type="image/png")

    @app.delete("/api/images/{name}/objects/{object_id}")
    def delete_object(name: str, object_id: int):
        """Delete a saved object (its PNG and its entry in annotations.json)."""
        labeller.folder.path(name)
        labeller.delete_object(name, object_id)
        return {"deleted": object_id}

    @app.get("/api/annotations")
    def annotations():
        """COCO-style annotations of the whole folder (RLE masks, plus the clicks)."""
        return labeller.store.coco(labeller.folder.names())

    @app.post("/api/sessions")
    def new_session(body: NewSession):
        """A session on a new object, or on a saved one (`object_id`)."""
        return _session_json(labeller.new_session(body.image, body.object_id))

    @app.get("/api/sessions/{session_id}")
    def get_session(session_id: str):
        """The session's clicks and current result."""
        return _session_json(labeller.session(session_id))

    @app.post("/api/sessions/{session_id}/clicks",
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def add_click(session_id: str, click: ClickIn):
        """Add a click. Answers newline-delimited JSON: on the refine step an `interim` event
        (the unrefined mask), then the `final` event, then `saved` once the mask and
        annotations.json are on disk; an `error` event if anything failed."""
        start = time.perf_counter()
        live = labeller.session(session_id)
        geometry = live.session.image.geometry
        if not (0 <= click.x < geometry.width and 0 <= click.y < geometry.height):
            raise ValueError(f"click (x={click.x}, y={click.y}) is outside the {geometry.width}x"
                             f"{geometry.height} image")
        background = labeller.encoding_in_background()
        new = [click.x, click.y, click.positive]
        before = [[c.x, c.y, c.positive] for c in live.session.clicks]
        # One worker thread predicts, builds each event and saves; the event loop only
        # forwards the lines (fewer thread hops than a sync generator on the thread pool).
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()

        def emit(body: dict | None) -> None:
            line = None if body is None else (json.dumps(body) + "\n").encode()
            loop.call_soon_threadsafe(lines.put_nowait, line)

        def event(kind: str, result: ClickResult, clicks: list) -> dict:
            return {"event": kind, "object_id": live.object_id, "clicks": clicks,
                    **_result_json(result), "background": background,
                    "server_ms": round((time.perf_counter() - start) * 1000, 2)}

        def run() -> None:
            try:
                result = labeller.click(
                    live, *new, on_interim=lambda r: emit(event("interim", r, [*before, new])))
                emit(event("final", result, [[c.x, c.y, c.positive]
                                             for c in live.session.clicks]))
                labeller.save(live)  # after the answer: the mask shows without waiting for it
                emit({"event": "saved", "object_id": live.object_id})
            except Exception as err:
                if not isinstance(err, (ValueError, LookupError)):
                    log.error("click failed", exc_info=err)
                emit({"event": "error", "detail": str(err)})
            finally:
                emit(None)

        async def stream():
            while (line := await lines.get()) is not None:
                yield line

        threading.Thread(target=run, daemon=True, name=f"click {session_id[:6]}").start()
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.post("/api/sessions/{session_id}/undo")
    def undo(session_id: str):
        """Undo the last click (400 when there is none); answers the session's new state."""
        live = labeller.session(session_id)
        labeller.undo(live)
        return _session_json(live)

    @app.post("/api/sessions/{session_id}/reset")
    def reset(session_id: str):
        """Remove every click of the object (its saved mask too); the session stays."""
        live = labeller.session(session_id)
        labeller.reset(live)
        return _session_json(live)

    @app.get("/api/sessions/{session_id}/mask.png", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def session_mask(session_id: str):
        """The session's current mask as PNG (255/0, original size)."""
        result = labeller.session(session_id).session.result
        if result is None:
            raise ValueError("the session has no clicks yet")
        return Response(cv2.imencode(".png", result.mask.astype(np.uint8) * 255)[1].tobytes(),
                        media_type="image/png")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    def message(status: int):
        async def handler(request: Request, exc: Exception):
            return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=status)
        return handler

    app.add_exception_handler(UploadTooLarge, message(413))
    app.add_exception_handler(ValueError, message(400))
    app.add_exception_handler(LookupError, message(404))

    async def unexpected(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); "
                                       "see the server log"}, status_code=500)

    app.add_exception_handler(Exception, unexpected)
