"""The stateless predict endpoint: a session's masks from the whole prompt list, every time."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from pycocotools import mask as coco_mask  # noqa: E402

from focsam_onnx.engine.click_session import ClickSession  # noqa: E402
from focsam_onnx.engine.prompts import Box, Click, prompts_to_json  # noqa: E402
from focsam_onnx.serve.app import create_app  # noqa: E402
from focsam_onnx.serve.labeller import LabellerSettings  # noqa: E402
from focsam_onnx.serve.mask_formats import encode_mask  # noqa: E402

BOX = Box(40.0, 30.0, 230.0, 200.0)


@pytest.fixture(scope="module")
def client(tiny_model_dir, tmp_path_factory):
    images = tmp_path_factory.mktemp("images")
    settings = LabellerSettings(model=tiny_model_dir, images=images,
                                out=tmp_path_factory.mktemp("labels"), threads=1, prefetch=0)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def png() -> bytes:
    return (Path(__file__).resolve().parents[2] / "examples" / "shapes.png").read_bytes()


@pytest.fixture(scope="module")
def image_hash(client, png) -> str:
    answer = client.post("/api/predict/images", content=png).json()
    assert (answer["width"], answer["height"]) == (320, 240)
    return answer["image_hash"]


def scripted(n: int) -> list[Click]:
    rng = np.random.default_rng(7)
    return [Click(int(rng.integers(320)), int(rng.integers(240)), i % 3 != 1) for i in range(n)]


def session_masks(client, image_hash, prompts) -> list[np.ndarray]:
    labeller = client.app.state.labeller
    session = ClickSession(labeller.engine, labeller._stateless[image_hash])
    return [session.add(p).mask for p in prompts]


def predict(client, image_hash, prompts, **options) -> dict:
    response = client.post("/api/predict", json={"image": image_hash,
                                                 "prompts": prompts_to_json(prompts), **options})
    assert response.status_code == 200, response.text
    return response.json()


def rle_mask(mask: dict) -> np.ndarray:
    return coco_mask.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)


@pytest.mark.parametrize("with_box", [False, True])
def test_equals_a_session_pixel_for_pixel_cold_and_with_a_cached_prefix(client, image_hash,
                                                                         with_box):
    prompts = ([BOX] if with_box else []) + scripted(20)
    expected = session_masks(client, image_hash, prompts)
    client.app.state.labeller.replays.clear()
    for n in (1, 2, 3, 5, 20):  # cold for 1, then each list extends a cached one
        answer = predict(client, image_hash, prompts[:n])
        assert answer["steps"] == n and answer["decoded_on_refined"] == (n >= 2)
        np.testing.assert_array_equal(rle_mask(answer["mask"]), expected[n - 1])
    assert answer["cached_steps"] == 5
    client.app.state.labeller.replays.clear()
    cold = predict(client, image_hash, prompts[:20])
    assert cold["cached_steps"] == 0
    np.testing.assert_array_equal(rle_mask(cold["mask"]), expected[19])


def test_mask_formats_agree(client, image_hash):
    prompts = scripted(3)
    rle = rle_mask(predict(client, image_hash, prompts)["mask"])
    png = predict(client, image_hash, prompts, mask_format="png")["mask"]["png"]
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(png), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded > 0, rle)
    polygons = predict(client, image_hash, prompts, mask_format="polygons")["mask"]["polygons"]
    points = np.concatenate([np.array(ring["points"]) for ring in polygons])
    assert points.min() >= 0 and (points.max(axis=0) < (320, 240)).all()


def test_polygons_outline_a_shape_with_a_hole():
    mask = np.zeros((120, 160), bool)
    cv2.circle(mask.view(np.uint8), (80, 60), 50, 1, -1)
    cv2.circle(mask.view(np.uint8), (80, 60), 20, 0, -1)
    rings = encode_mask(mask, "polygons")["polygons"]
    assert sorted(ring["hole"] for ring in rings) == [False, True]
    filled = np.zeros(mask.shape, np.uint8)
    for ring in sorted(rings, key=lambda r: r["hole"]):  # outer rings, then their holes
        cv2.fillPoly(filled, [np.array(ring["points"], np.int32)], 0 if ring["hole"] else 1)
    for ring in rings:  # a hole's ring runs through the object's own boundary pixels
        if ring["hole"]:
            cv2.polylines(filled, [np.array(ring["points"], np.int32)], True, 1)
    filled = filled.astype(bool)
    iou = np.count_nonzero(filled & mask) / np.count_nonzero(filled | mask)
    assert iou >= 0.98, iou


def test_a_folder_image_is_named_by_its_name(client, tmp_path, png):
    folder = client.app.state.labeller.folder.root
    (folder / "named.png").write_bytes(png)
    by_name = predict(client, "named.png", scripted(2))
    client.app.state.labeller.replays.clear()
    by_hash = predict(client, client.post("/api/predict/images", content=png).json()
                      ["image_hash"], scripted(2))
    assert by_name["mask"] == by_hash["mask"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"image": "0" * 64, "prompts": [{"x": 1, "y": 1}]}, 404, "upload it"),
    ({"prompts": []}, 422, "prompts"),
    ({"prompts": [{"x": 320, "y": 5}]}, 400, "outside the 320x240 image"),
    ({"prompts": [{"box": [0, 0, 5, 500]}]}, 400, "box"),
    ({"prompts": [{"x": 1, "y": 1}] * 201}, 422, "prompts"),
    ({"prompts": [{"x": 1.5, "y": 1}]}, 422, "x"),
    ({"prompts": [{"x": 1, "y": 1}], "encoder_precision": "int8"}, 400, "fp32"),
    ({"prompts": [{"x": 1, "y": 1}], "click_precision": "bf16"}, 400, "refines in fp32"),
    ({"prompts": [{"x": 1, "y": 1}], "refine_at": 7}, 200, ""),
])
def test_bad_prompts_get_a_4xx_with_a_message(client, image_hash, body, status, words):
    response = client.post("/api/predict", json={"image": image_hash, **body})
    assert response.status_code == status, response.text
    assert words in response.text and "Traceback" not in response.text


def test_a_nan_box_is_refused(client, image_hash):
    body = json.dumps({"image": image_hash, "prompts": [{"box": [0, 0, 10, 10]}]})
    body = body.replace("[0, 0,", "[NaN, 0,")  # not JSON, but what Python clients send
    response = client.post("/api/predict", content=body,
                           headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and "Traceback" not in response.text
    assert json.loads(response.text)["detail"]
