"""The HTTP face Label Studio calls: /health, /setup, /predict, /webhook (and /versions).

Label Studio's limits shape it: /health gets 1 s and /setup 3 s, so the model is opened before
the server listens and neither route does work; /predict gets 100 s. Interactive annotation
posts `params.context = {"result": [regions in the order they were made]}`; batch
pre-annotation posts `context: null`, and with no prompt FocSAM has nothing to segment, so it
answers an empty `results` list (Label Studio then creates no prediction).

Errors: our errors get their kind's status and `{"error": message}`, and the message is logged
here, because Label Studio keeps only the status line of a failed call. Anything else is a bug:
logged with its traceback and answered 500.
"""

from __future__ import annotations

import logging
import threading
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.replay_cache import ReplayCache
from focsam_onnx.errors import FocSAMError, InvalidInput
from focsam_onnx.integrations.common import predict
from focsam_onnx.integrations.label_studio.config import brush_target
from focsam_onnx.integrations.label_studio.images import ImageFetcher, LabelStudioLink
from focsam_onnx.integrations.label_studio.regions import brush_region, region_prompts

log = logging.getLogger(__name__)


class Backend:
    """The engine, the projects Label Studio set up, and the image cache of one server."""

    def __init__(self, engine: FocSAMEngine, model_version: str):
        self.engine = engine
        self.model_version = model_version
        self.images = ImageFetcher()
        self.replays = ReplayCache()  # each request's prompt prefixes, for the next request
        self.links: dict[str, LabelStudioLink] = {}  # project id -> what /setup said
        self._engine_lock = threading.Lock()  # one prediction at a time: each uses every core

    def setup(self, body: dict) -> dict:
        project = _project_id(body.get("project"))
        hostname = body.get("hostname")
        if not isinstance(hostname, str) or not hostname.startswith(("http://", "https://")):
            raise InvalidInput(f"/setup needs Label Studio's 'hostname' URL, got {hostname!r}")
        self.links[project] = LabelStudioLink(hostname, body.get("access_token") or None)
        return {"model_version": self.model_version}

    def predict(self, body: dict) -> dict:
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        if not isinstance(context, dict) or not context.get("result"):
            return {"results": []}
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or len(tasks) != 1 or not isinstance(tasks[0], dict):
            raise InvalidInput("an interactive /predict carries exactly one task")
        task = tasks[0]
        regions = region_prompts(context["result"])
        target = brush_target(body.get("label_config") or "", regions.to_name)
        data = task.get("data") or {}
        # a local-storage sync with "Treat every file as a source" stores the URL unnamed
        value = data.get(target.data_key, data.get("$undefined$"))
        link = self.links.get(_project_id(body.get("project")))
        image = self.images.get(value, link)
        if (image.shape[1], image.shape[0]) != (regions.width, regions.height):
            raise InvalidInput(
                f"the regions were drawn on a {regions.width}x{regions.height} image, but "
                f"{value} is {image.shape[1]}x{image.shape[0]}")
        with self._engine_lock:
            prediction = predict(self.engine, image, regions.prompts, self.replays)
        region = brush_region(prediction.mask, target.from_name, target.to_name,
                              target.label_for(regions.label), prediction.iou_prediction)
        return {"results": [{"result": [region], "model_version": self.model_version,
                             "score": prediction.iou_prediction}]}


def _project_id(project) -> str:
    """Label Studio names a project "<id>.<creation time>"; the id is the part before the dot."""
    return str(project or "").split(".", 1)[0]


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="focsam-onnx Label Studio ML backend",
                  description="FocSAM (refiner included) for Label Studio's smart keypoints and "
                              "rectangles; answers BrushLabels masks.")

    @app.exception_handler(FocSAMError)
    async def our_error(request: Request, err: FocSAMError):
        log.warning("%s %s: %s", request.method, request.url.path, err)
        return JSONResponse({"error": str(err)}, status_code=err.http_status)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception):
        error_id = uuid.uuid4().hex[:8]
        log.error("%s %s failed (error id %s)", request.method, request.url.path, error_id,
                  exc_info=err)
        return JSONResponse({"error": f"internal error {error_id}; see the backend's log"},
                            status_code=500)

    @app.get("/")
    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "model_class": "FocSAM", "model_version": backend.model_version}

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        return backend.setup(await _json(request))

    @app.get("/versions")
    def versions() -> dict:
        return {"versions": [backend.model_version]}

    @app.post("/predict")
    async def predict_route(request: Request) -> dict:
        body = await _json(request)
        return await _in_thread(backend.predict, body)

    @app.post("/webhook")
    async def webhook(request: Request) -> dict:
        body = await _json(request)
        # FocSAM is not trained from annotations: every event is acknowledged and dropped.
        return {"status": "ok", "action": body.get("action"), "trained": False}

    return app


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


async def _in_thread(function, *args):
    """Run blocking engine work off the event loop, so /health stays quick meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)
