"""The HTTP routes, one module per resource; each route makes one call into the labeller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from focsam_onnx.serve.labeller import Labeller


def _labeller(request: Request) -> Labeller:
    return request.app.state.labeller


LabellerDep = Annotated[Labeller, Depends(_labeller)]
