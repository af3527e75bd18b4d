"""The HTTP routes, one module per resource; each route makes one call into the labeller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from focsam_onnx.serve.labeller import Labeller


def _labeller(request: Request) -> Labeller:
    return request.app.state.labeller


LabellerDep = Annotated[Labeller, Depends(_labeller)]


class ErrorBody(BaseModel):
    detail: str
    error_id: str | None = None  # only on a 500: the id of its server log line


def errors(*statuses: int) -> dict[int, dict]:
    """OpenAPI entries for statuses a route may answer besides 200, all with `ErrorBody`: the
    guard's 401 and 403 and a bug's 500 everywhere, and each route's own kinds."""
    described = {400: "bad input", 401: "token required or wrong", 403: "refused origin or host",
                 404: "not found", 409: "stale or damaged state", 413: "over a size limit",
                 422: "malformed request", 429: "too many live sessions",
                 500: "a bug (its id is in the server log)", 503: "not ready yet"}
    return {s: {"model": ErrorBody, "description": described[s]}
            for s in sorted({401, 403, 500, *statuses})}
