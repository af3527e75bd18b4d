"""The Label Studio backend in-process: how regions become prompts, what each route answers, and
where the token goes. The real Label Studio round trip is test_label_studio_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from focsam_onnx.engine.prompts import Box, Click
from focsam_onnx.errors import InvalidInput, Unavailable
from focsam_onnx.integrations.common import check_prompts
from focsam_onnx.integrations.label_studio.brush_rle import mask_to_rle
from focsam_onnx.integrations.label_studio.config import LABEL_CONFIG, brush_target
from focsam_onnx.integrations.label_studio.images import LabelStudioLink, image_url
from focsam_onnx.integrations.label_studio.regions import region_prompts


def keypoint(x_pct, y_pct, **extra) -> dict:
    labels = extra.pop("labels", ["Object"])
    return {"type": "keypointlabels", "original_width": 320, "original_height": 240,
            "to_name": "image", "value": {"x": x_pct, "y": y_pct, "keypointlabels": labels},
            **extra}


def test_keypoints_become_clicks_in_region_order_with_rounded_pixels():
    regions = [keypoint(97 / 320 * 100, 55 / 240 * 100, is_positive=True),
               keypoint(50.0, 50.0, is_positive=False),
               keypoint(100.0, 100.0, is_positive=True)]  # the far corner: the last pixel
    parsed = region_prompts(regions)
    assert parsed.prompts == (Click(x=97, y=55, positive=True), Click(x=160, y=120, positive=False),
                              Click(x=319, y=239, positive=True))
    assert (parsed.width, parsed.height, parsed.to_name, parsed.label) == (320, 240, "image",
                                                                          "Object")


def test_without_is_positive_the_label_name_decides():
    parsed = region_prompts([keypoint(10, 10, labels=["Background"]),
                             keypoint(20, 20, labels=["negative"]), keypoint(30, 30)])
    assert [c.positive for c in parsed.prompts] == [False, False, True]
    # is_positive, when sent, wins over the name
    assert region_prompts([keypoint(10, 10, labels=["Background"], is_positive=True)]
                          ).prompts[0].positive


def test_rectangles_become_boxes_in_order_and_other_regions_are_skipped():
    rect = {"type": "rectanglelabels", "original_width": 320, "original_height": 240,
            "value": {"x": 12.5, "y": 12.5, "width": 50.0, "height": 25.0, "rotation": 0,
                      "rectanglelabels": ["Object"]}}
    brush = {"type": "brushlabels", "value": {"rle": [1, 2, 3]}}
    parsed = region_prompts([brush, rect, keypoint(50, 50, is_positive=True)])
    assert parsed.prompts == (Box(40, 30, 200, 90), Click(x=160, y=120, positive=True))


@pytest.mark.parametrize("regions, message", [
    ([], "no keypoint or rectangle"),
    ([{"type": "brushlabels"}], "no keypoint or rectangle"),
    ([keypoint(float("nan"), 10)], "not a finite number"),
    ([keypoint(101, 10)], "outside the image"),
    ([keypoint(10, 10), {**keypoint(10, 10), "original_width": 640}], "different sizes"),
    ([{**keypoint(10, 10), "image_rotation": 90}], "rotated image"),
    ([{"type": "rectanglelabels", "original_width": 320, "original_height": 240,
       "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 30}}], "rotated rectangle"),
])
def test_malformed_regions_are_refused_with_a_message(regions, message):
    with pytest.raises(InvalidInput, match=message):
        region_prompts(regions)


def test_prompt_checks():
    with pytest.raises(InvalidInput, match="no prompts"):
        check_prompts([], 10, 10)
    with pytest.raises(InvalidInput, match="outside"):
        check_prompts([Click(x=10, y=0, positive=True)], 10, 10)
    with pytest.raises(InvalidInput, match="box"):
        check_prompts([Box(5, 5, 5, 8)], 10, 10)
    with pytest.raises(InvalidInput, match="at most"):
        check_prompts([Click(x=0, y=0, positive=True)] * 1000, 10, 10)


def test_config_names_the_brush_tag_and_the_image_field():
    target = brush_target(LABEL_CONFIG)
    assert (target.from_name, target.to_name, target.data_key) == ("mask", "image", "image")
    assert target.label_for("Object") == "Object" and target.label_for("Dog") == "Object"
    with pytest.raises(InvalidInput, match="no <BrushLabels>"):
        brush_target('<View><Image name="image" value="$image"/></View>')
    with pytest.raises(InvalidInput, match="not valid XML"):
        brush_target("<View>")


def test_the_token_goes_only_to_label_studio():
    link = LabelStudioLink("http://127.0.0.1:8080", "secret")
    assert image_url("/data/upload/1/a.png", link) == ("http://127.0.0.1:8080/data/upload/1/a.png",
                                                       True)
    assert image_url("/data/local-files/?d=x/a.png", link)[0] == \
        "http://127.0.0.1:8080/data/local-files/?d=x/a.png"
    assert image_url("http://127.0.0.1:8080/data/upload/1/a.png", link)[1] is True
    assert image_url("https://example.com/a.png", link) == ("https://example.com/a.png", False)
    with pytest.raises(InvalidInput, match="pre-signed"):
        image_url("s3://bucket/a.png", link)
    with pytest.raises(Unavailable, match="/setup"):
        image_url("/data/upload/1/a.png", None)


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from fastapi.testclient import TestClient

    from focsam_onnx.integrations.label_studio.app import create_app
    from focsam_onnx.integrations.label_studio.server import open_backend

    backend = open_backend(tiny_model_dir, threads=2)
    return backend, TestClient(create_app(backend))


def test_health_setup_webhook_and_batch_predict(client):
    backend, http = client
    assert http.get("/health").json()["status"] == "UP"
    answer = http.post("/setup", json={"project": "3.1733300000", "schema": LABEL_CONFIG,
                                       "hostname": "http://127.0.0.1:8080",
                                       "access_token": "tok", "extra_params": None})
    assert answer.status_code == 200
    assert answer.json()["model_version"] == backend.model_version
    assert backend.links["3"] == LabelStudioLink("http://127.0.0.1:8080", "tok")
    assert http.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200
    # batch pre-annotation: context null, several tasks, no prompt -> no prediction
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/3/a.png"}}] * 2,
            "label_config": LABEL_CONFIG, "project": "3.1733300000",
            "params": {"login": None, "password": None, "context": None}}
    assert http.post("/predict", json=body).json() == {"results": []}


def test_predict_errors_are_statuses_with_a_message(client):
    _, http = client
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/9/a.png"}}],
            "label_config": LABEL_CONFIG, "project": "9.1",
            "params": {"context": {"result": [keypoint(10, 10, is_positive=True)]}}}
    answer = http.post("/predict", json=body)  # project 9 was never set up
    assert answer.status_code == 503 and "/setup" in answer.json()["error"]
    body["params"]["context"]["result"] = [keypoint(200, 10)]
    answer = http.post("/predict", json=body)
    assert answer.status_code == 400 and "outside the image" in answer.json()["error"]
    assert http.post("/predict", content=b"{").status_code == 400


def test_predict_answers_a_brush_region_of_the_engines_mask(client, monkeypatch):
    """The route on a stand-in fetcher (the real download is the end-to-end test's)."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.image_io import load_image

    backend, http = client
    image = load_image(Path(__file__).resolve().parents[2] / "examples" / "shapes.png")
    monkeypatch.setattr(backend.images, "get", lambda value, link: image)
    regions = [keypoint(50, 50, is_positive=True), keypoint(20, 30, is_positive=False)]
    answer = http.post("/predict", json={
        "tasks": [{"id": 1, "data": {"image": "/data/upload/3/shapes.png"}}],
        "label_config": LABEL_CONFIG, "project": "3.1", "params": {"context": {"result": regions}}})
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    (region,) = prediction["result"]
    assert region["value"]["brushlabels"] == ["Object"] and region["from_name"] == "mask"
    session = ClickSession(backend.engine, backend.engine.open_image(image))
    session.click(160, 120, True)
    expected = session.click(64, 72, False)
    assert prediction["score"] == pytest.approx(expected.iou_prediction)
    # the RLE itself is checked against label-studio-sdk's decoder in the end-to-end test
    assert region["value"]["rle"] == mask_to_rle(expected.mask)
    assert (region["original_width"], region["original_height"]) == (320, 240)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    import sys

    from typer.testing import CliRunner

    from focsam_onnx.cli import app

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    result = CliRunner().invoke(app, ["label-studio", "--model", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: focsam-onnx label-studio needs the 'serve' extra: "
        "pip install 'focsam-onnx[serve]'")


def test_the_readme_gives_the_config_the_tests_use():
    import textwrap

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Use it with Label Studio", 1)[1].split("```xml\n", 1)[1]
    assert textwrap.dedent(block.split("```", 1)[0]).strip() == LABEL_CONFIG
