"""`focsam-onnx label-studio`: open the model, then serve the backend with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from focsam_onnx.errors import require

log = logging.getLogger(__name__)


def model_version(engine) -> str:
    """What Label Studio records as each prediction's model version: package and model id."""
    from focsam_onnx import __version__

    return f"focsam-onnx-{__version__}-{engine.model.model_id[:12]}"


def open_backend(model: str | Path, threads: int | None = None,
                 cache_dir: str | Path | None = None, encoder_precision: str = "fp32"):
    """The Backend on an opened model. Everything slow happens here, before Label Studio's
    1 s /health and 3 s /setup limits apply."""
    for module in ("fastapi", "uvicorn"):
        require(module, "focsam-onnx label-studio", "serve")
    from focsam_onnx.engine.focsam_engine import FocSAMEngine
    from focsam_onnx.integrations.label_studio.app import Backend

    engine = FocSAMEngine.open(model, threads=threads, cache_dir=cache_dir,
                               encoder_precision=encoder_precision)
    return Backend(engine, model_version(engine))


def run_backend(backend, host: str = "127.0.0.1", port: int = 9090,
                announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted."""
    from focsam_onnx.asgi import run_listening
    from focsam_onnx.integrations.label_studio.app import create_app

    shown = f"[{host}]" if ":" in host else host
    run_listening(create_app(backend), host, port, f"http://{shown}:{port}", announce)
