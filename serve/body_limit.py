"""A size limit on JSON request bodies: the API's JSON is a few KB (at most 200 prompts), so a
megabyte is refused (413) before it is read, whatever Content-Length claims or omits. Image
uploads have their own, larger limit (`--max-upload-mb`)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BYTES = 1 << 20


class JsonBodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "json" not in headers.get("content-type", ""):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {"detail": f"a JSON body may hold at most {self.limit} bytes"}
        await JSONResponse(body, status_code=413)(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised inside the app's receive when a body outgrows the limit."""
