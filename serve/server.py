"""Running the web app: uvicorn on --host/--port, with a token unless the host is loopback."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from focsam_onnx.errors import require
from focsam_onnx.serve.auth import is_loopback, new_token


def require_serve_extra() -> None:
    """A clear one-line error when the `serve` extra is not installed."""
    for module in ("fastapi", "pycocotools", "uvicorn"):
        require(module, "focsam-onnx serve", "serve")


def page_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")


def run_server(settings, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
               announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted. A non-loopback `host` gets a generated token if none is given."""
    require_serve_extra()
    from focsam_onnx.asgi import run_listening
    from focsam_onnx.serve.app import create_app

    if token is None and not is_loopback(host):
        token = new_token()
    run_listening(create_app(settings, token), host, port, page_url(host, port, token), announce)
