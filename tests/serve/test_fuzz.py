"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis, in-process on the ASGI app):
no server error and no answer the schema does not declare, on every endpoint, with live image
names and session ids mixed into the generated requests."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from focsam_onnx.serve.app import create_app  # noqa: E402
from focsam_onnx.serve.labeller import LabellerSettings  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shapes.png"
EXAMPLES_PER_OPERATION = 60  # bounded: about a second per operation here
STATUSES: Counter = Counter()  # what the fuzzed requests were answered, for the record
# No server error, and every answer as the schema declares it (status, content type, body).
# Not "positive data acceptance": a body the schema allows can still be a bad image or an
# unknown name, which the server rightly refuses with a declared 4xx.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def live(tiny_model_dir, tmp_path_factory):
    """The app with an image opened and a session holding a click: names and ids to mix in."""
    from fastapi.testclient import TestClient

    images = tmp_path_factory.mktemp("fuzz-images")
    shutil.copy(EXAMPLE, images / "a_shapes.png")
    app = create_app(LabellerSettings(model=tiny_model_dir, images=images,
                                      out=tmp_path_factory.mktemp("fuzz-labels"), threads=1,
                                      prefetch=0))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        status = client.post("/api/images/a_shapes.png/open").json()
        while status["state"] == "encoding":
            status = client.get("/api/images/a_shapes.png/status").json()
        session = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()
        client.post(f"/api/sessions/{session['session_id']}/clicks", json={"x": 5, "y": 5})
        uploaded = client.post("/api/predict/images", content=EXAMPLE.read_bytes()).json()
        yield {"app": app, "name": "a_shapes.png", "session_id": session["session_id"],
               "object_id": session["object_id"], "image": uploaded["image_hash"]}
    print(f"\nfuzzed answers by status: {dict(sorted(STATUSES.items()))}")


def operations(app) -> list:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1"})
    return [result.ok() for result in loaded.get_all_operations()]


def test_no_server_error_and_no_undeclared_answer(live):
    """Every operation, EXAMPLES_PER_OPERATION generated requests each (schemathesis's
    strategies driven by hypothesis here: its pytest plugin does not load under this pytest)."""
    ops = operations(live["app"])
    assert len(ops) >= 15, [op.label for op in ops]
    for operation in ops:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            rng = random.Random(repr(case.path_parameters) + repr(case.body))
            for key in ("name", "session_id", "object_id"):
                if case.path_parameters and key in case.path_parameters and rng.random() < 0.5:
                    case.path_parameters[key] = live[key]
            if isinstance(case.body, dict) and "image" in case.body and rng.random() < 0.5:
                case.body["image"] = rng.choice([live["name"], live["image"]])
            response = case.call(headers={"Host": "127.0.0.1"})
            STATUSES[response.status_code] += 1
            assert response.status_code < 500, (case.operation.label, response.text[:300])
            case.validate_response(response, checks=CHECKS)

        fuzz()
    assert sum(STATUSES.values()) >= 10 * len(ops)
