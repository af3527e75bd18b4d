"""The nuclio entry points of the CVAT function: `init_context` once per worker, `handler` per
request. The model folder is $FOCSAM_MODEL (function.yaml sets /opt/nuclio/model); $FOCSAM_THREADS
caps onnxruntime's threads (default: the cores the container may use)."""

from __future__ import annotations

import json
import os

from focsam_onnx.errors import FocSAMError

DEFAULT_MODEL = "/opt/nuclio/model"


def init_context(context) -> None:
    from focsam_onnx.integrations.cvat.interactor import Interactor

    model = os.environ.get("FOCSAM_MODEL", DEFAULT_MODEL)
    threads = os.environ.get("FOCSAM_THREADS")
    context.logger.info(f"opening the FocSAM model in {model}")
    context.user_data.interactor = Interactor.open(model, int(threads) if threads else None)


def handler(context, event):
    try:
        body = context.user_data.interactor.answer(event.body)
        status = 200
    except FocSAMError as err:
        context.logger.warn(f"refused: {err}")
        body, status = {"error": str(err)}, err.http_status
    return context.Response(body=json.dumps(body, separators=(",", ":")), headers={},
                            content_type="application/json", status_code=status)
