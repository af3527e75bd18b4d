"""The one place where errors become HTTP answers.

A `FocSAMError` answers its kind's status (`errors.py`) with its one-line message. Anything else
is a bug: logged with its traceback under a short error id and answered 500 with that id, never
a traceback and never a 4xx (a numpy shape error is not the client's fault).
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from focsam_onnx.errors import FocSAMError

log = logging.getLogger("focsam_onnx.serve")


def log_unexpected(err: BaseException, where: str) -> str:
    """Log `err` with its traceback under a new error id; returns the id."""
    ident = secrets.token_hex(4)
    log.error("internal error %s in %s", ident, where, exc_info=err)
    return ident


def error_body(err: BaseException, where: str) -> tuple[int, dict]:
    """(status, JSON body) for `err`: its kind's status and message, or a logged 500."""
    if isinstance(err, FocSAMError):
        return err.http_status, {"detail": str(err)}
    ident = log_unexpected(err, where)
    return 500, {"detail": f"internal error {ident}; the server log has its details",
                 "error_id": ident}


def install(app: FastAPI) -> None:
    """Answer FocSAMErrors with their status; add `AnswerBugsWith500` as a middleware too."""
    async def handle(request: Request, exc: FocSAMError) -> JSONResponse:
        status, body = error_body(exc, f"{request.method} {request.url.path}")
        return JSONResponse(body, status_code=status)

    app.add_exception_handler(FocSAMError, handle)


class AnswerBugsWith500:
    """Innermost catch-all: a bug is answered 500 with its id here, and not re-raised (as
    Starlette's own last-resort handler does), so it is logged once, by us, with its id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            where = f"{scope.get('method')} {scope.get('path')}"
            if started:  # too late for a status: the stream just ends
                log_unexpected(exc, where)
                return
            status, body = error_body(exc, where)
            await JSONResponse(body, status_code=status)(scope, receive, send)
