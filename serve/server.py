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
    import uvicorn

    from focsam_onnx.serve.app import create_app

    if token is None and not is_loopback(host):
        token = new_token()
    app = create_app(settings, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    # Listen before the URL is announced: a client that opens it at once (a browser, a test)
    # then waits in the backlog instead of being refused while the server starts.
    sock = config.bind_socket()
    sock.listen()
    announce(page_url(host, port, token))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown, as uvicorn.run
        pass
