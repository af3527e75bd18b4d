"""The CVAT interactor function, called in-process through nuclio-sdk's test platform with the
request CVAT sends (the frame as base64, pos_points, neg_points, obj_bbox): its mask equals the
engine's for the same prompts in the order they were made, pixel for pixel."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

IMAGE = Path(__file__).resolve().parents[2] / "examples" / "shapes.png"  # 320 x 240
FUNCTION = Path(__file__).resolve().parents[2] / "integrations" / "cvat"


@pytest.fixture()
def call(tiny_model_dir, monkeypatch):
    """call(body) -> (status, answer) through a fresh platform (a fresh function worker)."""
    import nuclio_sdk
    import nuclio_sdk.test

    from focsam_onnx.integrations.cvat import main

    monkeypatch.setenv("FOCSAM_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("FOCSAM_THREADS", "2")
    platform = nuclio_sdk.test.Platform()

    def call(body: dict) -> tuple[int, dict]:
        event = nuclio_sdk.Event(body=body, content_type="application/json", method="POST",
                                 path="/")
        response = platform.call_handler(main.handler, event)
        assert response.content_type == "application/json"
        return response.status_code, json.loads(response.body)

    return call


def request(pos=(), neg=(), box=None) -> dict:
    return {"image": base64.b64encode(IMAGE.read_bytes()).decode(),
            "pos_points": [list(p) for p in pos], "neg_points": [list(p) for p in neg],
            "obj_bbox": box}


@pytest.fixture(scope="module")
def engine_mask(tiny_model_dir):
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.focsam_engine import FocSAMEngine

    engine = FocSAMEngine.open(tiny_model_dir, threads=2)
    encoded = engine.open_image(IMAGE)

    def mask(steps: list) -> np.ndarray:
        session = ClickSession(engine, encoded)
        for kind, *args in steps:
            result = session.set_box(*args) if kind == "box" else session.click(*args)
        return result.mask.astype(np.uint8) * 255

    return mask


def mask_of(answer: dict) -> np.ndarray:
    mask = np.array(answer["mask"], np.uint8)
    assert mask.shape == (240, 320)
    return mask


A, B, C = (169, 123), (97, 55), (263, 200)


def test_clicks_one_per_call_keep_their_order(call, engine_mask):
    """A +, then B -, then C +: CVAT's lists say (A, C) and (B); FocSAM gets A, B, C."""
    calls = [request(pos=[A]), request(pos=[A], neg=[B]), request(pos=[A, C], neg=[B])]
    steps = [("click", *A, True), ("click", *B, False), ("click", *C, True)]
    for n, body in enumerate(calls, 1):
        status, answer = call(body)
        assert status == 200, answer
        np.testing.assert_array_equal(mask_of(answer), engine_mask(steps[:n]))
    # the order matters here: positives-then-negatives would have been another mask
    assert not np.array_equal(engine_mask(steps), engine_mask([steps[0], steps[2], steps[1]]))


def test_several_new_points_in_one_call_are_taken_positives_first(call, engine_mask):
    status, answer = call(request(pos=[A, C], neg=[B]))
    assert status == 200, answer
    np.testing.assert_array_equal(
        mask_of(answer),
        engine_mask([("click", *A, True), ("click", *C, True), ("click", *B, False)]))


def test_a_removed_point_leaves_the_others_in_their_order(call, engine_mask):
    for body in (request(pos=[C]), request(pos=[C], neg=[B]), request(pos=[C, A], neg=[B])):
        assert call(body)[0] == 200
    status, answer = call(request(pos=[C, A]))  # B removed in CVAT
    assert status == 200, answer
    np.testing.assert_array_equal(mask_of(answer),
                                  engine_mask([("click", *C, True), ("click", *A, True)]))


def test_box_comes_first_and_a_new_box_is_a_new_object(call, engine_mask):
    box = [[40, 30], [230, 200]]
    for body, steps in [
        (request(box=box), [("box", 40, 30, 230, 200)]),
        (request(pos=[A], box=box), [("box", 40, 30, 230, 200), ("click", *A, True)]),
        (request(pos=[A, C], box=[[10, 20], [300, 220]]),  # another object: A, C are new
         [("box", 10, 20, 300, 220), ("click", *A, True), ("click", *C, True)]),
    ]:
        status, answer = call(body)
        assert status == 200, answer
        np.testing.assert_array_equal(mask_of(answer), engine_mask(steps))


def test_continuous_coordinates_fall_in_the_pixel_that_holds_them(call, engine_mask):
    status, answer = call(request(pos=[(A[0] + 0.75, A[1] + 0.2)]))
    assert status == 200, answer
    np.testing.assert_array_equal(mask_of(answer), engine_mask([("click", *A, True)]))


@pytest.mark.parametrize("body, message", [
    ({"image": None, "pos_points": [[1, 1]], "neg_points": []}, "'image'"),
    ({"image": "not base64!", "pos_points": [[1, 1]], "neg_points": []}, "base64"),
    ({"image": base64.b64encode(b"not an image").decode(), "pos_points": [[1, 1]]},
     "cannot decode image"),
    ({"pos_points": [], "neg_points": []}, "no prompt"),
    ({"pos_points": [[320, 10]], "neg_points": []}, "outside the 320x240 frame"),
    ({"pos_points": [[float("nan"), 10]], "neg_points": []}, "finite"),
    ({"pos_points": [[5, 5]] * 300, "neg_points": []}, "at most"),
    ({"pos_points": [[5, 5]], "obj_bbox": [[400, 300], [500, 400]]}, "no area"),
])
def test_bad_requests_get_a_4xx_with_a_message(call, body, message):
    body = {"image": base64.b64encode(IMAGE.read_bytes()).decode(), **body}
    status, answer = call(body)
    assert 400 <= status < 500 and message in answer["error"], (status, answer)


def test_function_yaml_declares_an_interactor_for_cvat():
    import yaml

    spec = yaml.safe_load((FUNCTION / "function.yaml").read_text())
    annotations = spec["metadata"]["annotations"]
    assert annotations["type"] == "interactor"
    assert annotations["startswith_box_optional"] is True
    assert (annotations["min_pos_points"], annotations["min_neg_points"]) == (0, 0)
    assert spec["spec"]["handler"] == "main:handler" and (FUNCTION / "main.py").is_file()
    assert spec["spec"]["triggers"]["myHttpTrigger"]["numWorkers"] == 1
    env = {e["name"]: e["value"] for e in spec["spec"]["env"]}
    assert env["FOCSAM_MODEL"] == "/opt/nuclio/model"
