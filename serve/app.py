"""The web app of `focsam-onnx serve`: the FastAPI application with its guard, its error mapping
(`error_handlers.py`), its routes (`routes/`) and the static page; the OpenAPI page is at /docs.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from focsam_onnx.serve import error_handlers
from focsam_onnx.serve.auth import AccessGuard
from focsam_onnx.serve.body_limit import JsonBodyLimit
from focsam_onnx.serve.labeller import Labeller, LabellerSettings
from focsam_onnx.serve.routes import exports, images, page, predict, sessions

STATIC = resources.files("focsam_onnx.serve") / "static"


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
    error_handlers.install(app)
    # Outermost last: the guard, then the catch-all for bugs, then the body limit (whose own
    # refusal must reach the client as a 413, not be caught as a bug).
    app.add_middleware(JsonBodyLimit)
    app.add_middleware(error_handlers.AnswerBugsWith500)
    app.add_middleware(AccessGuard, token=token)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for routes in (page, images, sessions, predict, exports):
        app.include_router(routes.router)
    return app
