"""Running an ASGI app with uvicorn: the one way every server of the package starts."""

from __future__ import annotations

from collections.abc import Callable


def run_listening(app, host: str, port: int, url: str, announce: Callable[[str], None]) -> None:
    """Bind and listen on host:port, then announce `url`, then serve until Ctrl-C.

    Listening comes first so that a client opening the URL at once (a browser, a test, Label
    Studio's /health) waits in the backlog instead of being refused while uvicorn starts.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    sock = config.bind_socket()
    sock.listen()
    announce(url)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown, as uvicorn.run
        pass
