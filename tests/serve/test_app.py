"""The HTTP API through FastAPI's test client: every endpoint, and the bad requests."""

from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from focsam_onnx.engine.image_io import load_image  # noqa: E402
from focsam_onnx.errors import InvalidInput  # noqa: E402
from focsam_onnx.serve.annotations import SavedObject  # noqa: E402
from focsam_onnx.serve.app import create_app  # noqa: E402
from focsam_onnx.serve.labeller import LabellerSettings  # noqa: E402
from focsam_onnx.serve.payloads import mask_json  # noqa: E402

CLICKS = [(170, 125, True), (60, 55, False), (200, 150, True)]


@contextmanager
def serving(model, images, out, token=None, **options):
    settings = LabellerSettings(model=model, images=images, out=out, threads=1,
                                **{"prefetch": 0, **options})
    with TestClient(create_app(settings, token), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture()
def out(tmp_path):
    return tmp_path / "labels"


@pytest.fixture()
def client(tiny_model_dir, images_dir, out):
    with serving(tiny_model_dir, images_dir, out) as client:
        yield client


def open_ready(client, name: str) -> dict:
    status = client.post(f"/api/images/{name}/open").json()
    deadline = time.monotonic() + 300
    while status["state"] == "encoding" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(f"/api/images/{name}/status").json()
    assert status["state"] == "ready", status
    return status


def click(client, session_id: str, x: int, y: int, positive: bool = True) -> list[dict]:
    response = client.post(f"/api/sessions/{session_id}/clicks",
                           json={"x": x, "y": y, "positive": positive})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def as_json(click: tuple[int, int, bool]) -> dict:
    x, y, positive = click
    return {"x": x, "y": y, "positive": positive}


def decoded(mask: dict) -> np.ndarray:
    """The page's mask (a bounding-box crop as a 1-bit PNG) placed back in the image."""
    full = np.zeros((mask["height"], mask["width"]), bool)
    if mask["png"]:
        png = np.frombuffer(base64.b64decode(mask["png"]), np.uint8)
        crop = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 127
        assert crop.shape == (mask["crop_height"], mask["crop_width"])  # exact up to 1 MP
        full[mask["y"]:mask["y"] + crop.shape[0], mask["x"]:mask["x"] + crop.shape[1]] = crop
    return full


def saved_png(out, image: str, object_id: int) -> np.ndarray:
    """The PNG the object's record names (the record is the truth)."""
    record = json.loads((out / image / "annotations.json").read_text())
    (entry,) = [a for a in record["annotations"] if a["id"] == object_id]
    return cv2.imread(str(out / image / entry["mask_file"]), cv2.IMREAD_UNCHANGED)


def test_mask_json_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 9)) > 0.5, np.ones((3, 4), bool), np.zeros((2, 2), bool)):
        np.testing.assert_array_equal(decoded(mask_json(mask)), mask)
    corner = np.zeros((50, 60), bool)
    corner[40:45, 7:9] = True
    sent = mask_json(corner)
    assert (sent["x"], sent["y"], sent["crop_width"], sent["crop_height"]) == (7, 40, 2, 5)
    np.testing.assert_array_equal(decoded(sent), corner)


def test_a_large_mask_is_sent_bounded():
    """A 4000 x 3000 mask of noise (the worst case) is sent scaled to PREVIEW_PIXELS; its PNG
    stays under the stated bound, and a compact object of the same image is far smaller."""
    from focsam_onnx.serve.payloads import PREVIEW_PIXELS

    noise = np.random.default_rng(1).random((3000, 4000)) > 0.5
    sent = mask_json(noise)
    png = cv2.imdecode(np.frombuffer(base64.b64decode(sent["png"]), np.uint8),
                       cv2.IMREAD_GRAYSCALE)
    assert png.size <= PREVIEW_PIXELS and png.shape[1] / png.shape[0] == pytest.approx(4 / 3,
                                                                                        rel=0.01)
    assert len(base64.b64decode(sent["png"])) <= PREVIEW_PIXELS // 8 + 4096
    disc = np.zeros((3000, 4000), np.uint8)
    cv2.circle(disc, (2000, 1500), 400, 1, -1)
    assert len(mask_json(disc.astype(bool))["png"]) < 20_000


def test_health_and_image_list(client):
    assert client.get("/api/health").json()["variant"] == "tiny"
    images = client.get("/api/images").json()["images"]
    assert [i["name"] for i in images] == ["a_shapes.png", "b_flipped.png", "c_rotated.jpg"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "/api/sessions/{session_id}/clicks" in client.get("/openapi.json").json()["paths"]


def test_clicks_stream_interim_then_final_and_save_the_engine_mask(client, images_dir, out,
                                                                   engine_mask):
    open_ready(client, "a_shapes.png")
    session = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()
    assert session["prompts"] == [] and session["result"] is None
    sid, oid = session["session_id"], session["object_id"]
    streams = [click(client, sid, *c) for c in CLICKS]
    assert [[e["event"] for e in s] for s in streams] == [
        ["final", "saved"], ["interim", "final", "saved"], ["final", "saved"]]
    interim, refined, _ = streams[1]
    assert not interim["decoded_on_refined"] and refined["decoded_on_refined"]
    assert refined["refiner_ran"] and len(interim["prompts"]) == len(refined["prompts"]) == 2
    expected = engine_mask(images_dir / "a_shapes.png", CLICKS)
    final = streams[-1][-2]
    np.testing.assert_array_equal(decoded(final["mask"]), expected)
    np.testing.assert_array_equal(saved_png(out, "a_shapes.png", oid), expected * 255)
    coco = json.loads((out / "a_shapes.png" / "annotations.json").read_text())
    (entry,) = coco["annotations"]
    assert entry["prompts"] == [{"x": x, "y": y, "positive": p} for x, y, p in CLICKS]
    np.testing.assert_array_equal(SavedObject.from_coco(entry).mask(), expected)
    assert entry["area"] == int(expected.sum())
    png = client.get(f"/api/images/a_shapes.png/objects/{oid}/mask.png")
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png.content, np.uint8),
                                               cv2.IMREAD_UNCHANGED), expected * 255)
    current = client.get(f"/api/sessions/{sid}/mask.png")
    assert current.status_code == 200 and current.content == png.content


def test_undo_reset_and_delete(client, images_dir, out, engine_mask):
    open_ready(client, "a_shapes.png")
    sid = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()["session_id"]
    undo = client.post(f"/api/sessions/{sid}/undo")
    assert undo.status_code == 400 and "nothing to undo" in undo.json()["detail"]
    for c in CLICKS[:2]:
        click(client, sid, *c)
    state = client.post(f"/api/sessions/{sid}/undo").json()
    assert state["prompts"] == [as_json(CLICKS[0])]
    expected = engine_mask(images_dir / "a_shapes.png", CLICKS[:1])
    np.testing.assert_array_equal(decoded(state["result"]["mask"]), expected)
    np.testing.assert_array_equal(saved_png(out, "a_shapes.png", 1), expected * 255)
    assert client.post(f"/api/sessions/{sid}/reset").json()["result"] is None
    assert client.get("/api/images/a_shapes.png/objects").json()["objects"] == []
    assert not list((out / "a_shapes.png").glob("object_1*.png"))
    click(client, sid, *CLICKS[0])
    assert client.delete("/api/images/a_shapes.png/objects/1").json() == {"deleted": 1}
    assert client.get("/api/images/a_shapes.png/objects").json()["objects"] == []
    gone = client.post(f"/api/sessions/{sid}/clicks", json={"x": 1, "y": 1})
    assert gone.status_code == 404 and "unknown or expired session" in gone.json()["detail"]
    assert client.delete("/api/images/a_shapes.png/objects/1").status_code == 404


def test_objects_survive_a_restart_and_a_session_resumes_them(tiny_model_dir, images_dir, out,
                                                              engine_mask):
    with serving(tiny_model_dir, images_dir, out) as client:
        open_ready(client, "b_flipped.png")
        for clicks in (CLICKS[:2], CLICKS[2:]):
            sid = client.post("/api/sessions", json={"image": "b_flipped.png"}).json()
            for c in clicks:
                click(client, sid["session_id"], *c)
    with serving(tiny_model_dir, images_dir, out) as client:
        listed = client.get("/api/images").json()["images"]
        assert {i["name"]: i["objects"] for i in listed}["b_flipped.png"] == 2
        objects = client.get("/api/images/b_flipped.png/objects").json()["objects"]
        assert [o["object_id"] for o in objects] == [1, 2]
        expected = engine_mask(images_dir / "b_flipped.png", CLICKS[:2])
        np.testing.assert_array_equal(decoded(objects[0]["mask"]), expected)
        open_ready(client, "b_flipped.png")
        resumed = client.post("/api/sessions", json={"image": "b_flipped.png",
                                                     "object_id": 1}).json()
        assert resumed["prompts"] == [as_json(c) for c in CLICKS[:2]]
        np.testing.assert_array_equal(decoded(resumed["result"]["mask"]), expected)
        state = client.post(f"/api/sessions/{resumed['session_id']}/undo").json()
        assert state["prompts"] == [as_json(CLICKS[0])]
        new = client.post("/api/sessions", json={"image": "b_flipped.png"}).json()
        assert new["object_id"] == 3  # ids are never reused
        coco = client.get("/api/annotations").json()
        assert [(a["image_id"], a["object_id"]) for a in coco["annotations"]] == [(1, 1), (1, 2)]
        assert coco["images"][0]["file_name"] == "b_flipped.png"


def test_page_gets_the_engine_pixels_of_an_exif_rotated_jpeg(client, images_dir):
    status = open_ready(client, "c_rotated.jpg")
    engine_pixels = load_image(images_dir / "c_rotated.jpg")
    assert (status["height"], status["width"]) == engine_pixels.shape[:2] == (320, 240)
    png = client.get("/api/images/c_rotated.jpg/image")
    assert png.headers["content-type"] == "image/png"
    served = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(served, engine_pixels)


@pytest.mark.parametrize("name", ["..%2Fimages%2Fa_shapes.png", "%2E%2E%2Fimages%2Fa_shapes.png",
                                  "%2Fetc%2Fpasswd", "..", "a_shapes.png%00.png",
                                  "missing.png", ".hidden.png"])
def test_unknown_names_and_traversal_are_404(client, name):
    for response in (client.post(f"/api/images/{name}/open"),
                     client.get(f"/api/images/{name}/image"),
                     client.get(f"/api/images/{name}/objects")):
        assert response.status_code == 404, (name, response.text)
        assert "Traceback" not in response.text


def test_bad_requests_get_a_4xx_with_a_message(client):
    open_ready(client, "a_shapes.png")
    sid = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()["session_id"]
    outside = client.post(f"/api/sessions/{sid}/clicks", json={"x": 320, "y": 10})
    assert outside.status_code == 400 and "outside the 320x240 image" in outside.json()["detail"]
    negative = client.post(f"/api/sessions/{sid}/clicks", json={"x": -1, "y": 10})
    assert negative.status_code == 400
    assert client.post(f"/api/sessions/{sid}/clicks", json={"x": "left"}).status_code == 422
    assert client.post("/api/sessions/nope/undo").status_code == 404
    assert client.post("/api/sessions", json={"image": "b_flipped.png"}).status_code == 404
    not_open = client.post("/api/sessions", json={"image": "b_flipped.png"}).json()
    assert "not open" in not_open["detail"]
    resume = client.post("/api/sessions", json={"image": "a_shapes.png", "object_id": 9})
    assert resume.status_code == 404 and "no saved object 9" in resume.json()["detail"]
    assert client.get(f"/api/sessions/{sid}/mask.png").status_code == 400


def test_uploads_are_checked(client, images_dir):
    good = cv2.imencode(".png", load_image(images_dir / "a_shapes.png")[:64, :80])[1].tobytes()
    name = client.post("/api/images?filename=../../evil name.png", content=good).json()["image"]
    assert name == "evil_name.png" and (images_dir / name).is_file()
    assert client.post("/api/images?filename=evil name.png",
                       content=good).json()["image"] == "evil_name_2.png"
    corrupt = client.post("/api/images?filename=x.png", content=good[: len(good) // 2])
    assert corrupt.status_code == 400 and "x.png" in corrupt.json()["detail"]
    junk = client.post("/api/images?filename=x.png", content=b"not an image at all")
    assert junk.status_code == 400 and "cannot decode image" in junk.json()["detail"]
    assert client.post("/api/images?filename=x.png", content=b"").status_code == 400
    too_big = client.post("/api/images?filename=x.png", content=b"0" * (50 << 20 | 1))
    assert too_big.status_code == 413
    # A decompression bomb: a tiny file announcing 100 megapixels is refused unread.
    bomb = cv2.imencode(".png", np.zeros((10_000, 10_000), np.uint8))[1].tobytes()
    refused = client.post("/api/images?filename=bomb.png", content=bomb)
    assert refused.status_code == 413 and "over the limit" in refused.json()["detail"]
    names = [i["name"] for i in client.get("/api/images").json()["images"]]
    assert names == ["a_shapes.png", "b_flipped.png", "c_rotated.jpg", "evil_name.png",
                     "evil_name_2.png"]


def test_unreadable_annotations_are_reported_and_kept(client, out):
    folder = out / "a_shapes.png"
    folder.mkdir(parents=True)
    (folder / "annotations.json").write_text("{broken")
    response = client.get("/api/images/a_shapes.png/objects")
    assert response.status_code == 409 and "will not overwrite it" in response.json()["detail"]
    assert (folder / "annotations.json").read_text() == "{broken"


def test_token_is_required_when_set(tiny_model_dir, images_dir, out):
    with serving(tiny_model_dir, images_dir, out, token="s3cret") as client:
        missing = client.get("/api/images")
        assert missing.status_code == 401 and "token is required" in missing.json()["detail"]
        wrong = client.get("/api/images", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
        assert client.get("/api/images?token=nope").status_code == 401
        assert client.get("/api/images", headers={"Authorization": "Bearer s3cret"}).is_success
        assert client.get("/api/images", headers={"X-FocSAM-Token": "s3cret"}).is_success
        page = client.get("/?token=s3cret")
        assert page.is_success and "focsam_token=s3cret" in page.headers["set-cookie"]
        assert client.get("/api/images").is_success  # the cookie now carries it


def test_loopback_server_refuses_other_host_names(client):
    refused = client.get("/api/images", headers={"Host": "attacker.example:8000"})
    assert refused.status_code == 403 and "loopback" in refused.json()["detail"]
    assert client.get("/api/images", headers={"Host": "localhost:8000"}).is_success


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1:9999"},  # another port of loopback: another origin
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_other_origins_may_not_change_state(client, images_dir, headers):
    png = (images_dir / "a_shapes.png").read_bytes()
    upload = client.post("/api/images?filename=x.png", content=png,
                         headers={"Content-Type": "text/plain", **headers})
    assert upload.status_code == 403 and "may not change" in upload.json()["detail"]
    assert client.post("/api/images/a_shapes.png/open", headers=headers).status_code == 403
    assert not (images_dir / "x.png").exists()
    assert client.get("/api/images", headers=headers).is_success  # reading is not changing
    own = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/images/a_shapes.png/open", headers=own).is_success


def test_concurrent_sessions_are_isolated(client, images_dir, engine_mask):
    open_ready(client, "a_shapes.png")
    plans = [CLICKS, [(30, 200, True), (250, 40, False), (100, 100, True)]]
    sessions = [client.post("/api/sessions", json={"image": "a_shapes.png"}).json()
                for _ in plans]
    finals: dict[int, dict] = {}

    def label(i: int) -> None:
        for c in plans[i]:
            finals[i] = click(client, sessions[i]["session_id"], *c)[-2]

    threads = [threading.Thread(target=label, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, plan in enumerate(plans):
        np.testing.assert_array_equal(decoded(finals[i]["mask"]),
                                      engine_mask(images_dir / "a_shapes.png", plan))
    assert len(client.get("/api/images/a_shapes.png/objects").json()["objects"]) == 2


def test_background_encoding_fills_the_cache(tiny_model_dir, images_dir, out, tmp_path):
    cache = tmp_path / "cache"
    with serving(tiny_model_dir, images_dir, out, prefetch=2, cache_dir=cache) as client:
        open_ready(client, "a_shapes.png")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            background = client.get("/api/images/a_shapes.png/status").json()["background"]
            if background["encoded"] == 2 and background["running"] is None:
                break
            time.sleep(0.1)
        assert background == {"running": None, "pending": [], "encoded": 2}
        assert len(list(cache.glob("*.bin"))) == 3
        for name in ("b_flipped.png", "c_rotated.jpg"):
            assert open_ready(client, name)["from_cache"] is True
        labeller = client.app.state.labeller
        assert labeller.engine.encoder_runs == 1  # only the opened image, in the foreground


@pytest.fixture(scope="module")
def int8_model_dir(tiny_model_dir, tmp_path_factory):
    import shutil

    from focsam_onnx.export.encoder_precision import add_encoder_precisions

    model = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(tiny_model_dir, model)
    add_encoder_precisions(model, ["int8"], clicks=2, threads=1)
    return model


def test_reduced_precision_serves_the_page_and_the_background_encoder(int8_model_dir,
                                                                      images_dir, out, tmp_path):
    cache = tmp_path / "cache"
    with serving(int8_model_dir, images_dir, out, prefetch=1, cache_dir=cache,
                 encoder_precision="int8") as client:
        labeller = client.app.state.labeller
        assert labeller.engine.model.encoder_precision == "int8"
        open_ready(client, "a_shapes.png")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            background = client.get("/api/images/a_shapes.png/status").json()["background"]
            if background["encoded"] == 1 and background["running"] is None:
                break
            time.sleep(0.1)
        # The background encoder used int8 too: its embedding is what the page's engine finds.
        assert open_ready(client, "b_flipped.png")["from_cache"] is True
        session = client.post("/api/sessions", json={"image": "b_flipped.png"}).json()
        events = click(client, session["session_id"], 170, 125)
        assert [e["event"] for e in events] == ["final", "saved"]


def test_a_precision_the_export_does_not_offer_is_refused(tiny_model_dir, images_dir, out):
    with pytest.raises(ValueError, match="int8"):
        with serving(tiny_model_dir, images_dir, out, encoder_precision="int8"):
            pass


def test_an_engine_failure_is_a_500_with_an_error_id_in_the_log(client, caplog):
    """A bug inside the engine (here a numpy-style ValueError from the decoder) is never
    answered as the client's fault: 500, a short id, and the traceback in the server log."""
    open_ready(client, "a_shapes.png")
    sid = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()["session_id"]
    click(client, sid, *CLICKS[0])
    engine = client.app.state.labeller.engine

    def broken_decode(*args, **kwargs):
        raise ValueError("shapes (1,4096,256) and (128,256) not aligned")

    original, engine.decode = engine.decode, broken_decode
    try:
        with caplog.at_level("ERROR", logger="focsam_onnx.serve"):
            failed_click = client.post(f"/api/sessions/{sid}/clicks", json={"x": 5, "y": 5})
            failed_predict = client.post("/api/predict", json={
                "image": "a_shapes.png", "prompts": [{"x": 5, "y": 5}]})
    finally:
        engine.decode = original
    answers = (failed_click, failed_predict)
    assert [a.status_code for a in answers] == [500, 500]
    ids = [answer.json()["error_id"] for answer in answers]
    for answer, ident in zip(answers, ids):
        assert ident in answer.json()["detail"] and "not aligned" not in answer.text
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [any(ident in r.getMessage() for r in logged) for ident in ids] == [True, True]
    assert all(r.exc_info and "not aligned" in str(r.exc_info[1]) for r in logged)
    # the session is as it was: the next click works
    assert [e["event"] for e in click(client, sid, *CLICKS[1])][-1] == "saved"


def test_names_and_limits(client, images_dir, tmp_path):
    png = (images_dir / "a_shapes.png").read_bytes()
    long_name = client.post(f"/api/images?filename={'n' * 5000}.png", content=png)
    assert long_name.status_code == 400 and "characters" in long_name.json()["detail"]
    outside = tmp_path / "outside.png"
    outside.write_bytes(png)
    (images_dir / "link.png").symlink_to(outside)
    names = [i["name"] for i in client.get("/api/images").json()["images"]]
    assert "link.png" not in names
    assert client.get("/api/images/link.png/image").status_code == 404
    huge = client.post("/api/sessions", content=b'{"image": "' + b"a" * (2 << 20) + b'"}',
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "at most" in huge.json()["detail"]


def test_sessions_are_bounded_and_live_ones_never_evicted(client, monkeypatch):
    from focsam_onnx.serve import labeller as labeller_module

    monkeypatch.setattr(labeller_module, "MAX_SESSIONS", 3)
    open_ready(client, "a_shapes.png")
    ids = [client.post("/api/sessions", json={"image": "a_shapes.png"}).json()["session_id"]
           for _ in range(3)]
    full = client.post("/api/sessions", json={"image": "a_shapes.png"})
    assert full.status_code == 429 and "in use" in full.json()["detail"]
    assert all(client.get(f"/api/sessions/{sid}").is_success for sid in ids)
    monkeypatch.setattr(labeller_module, "SESSION_IDLE_S", 0.0)  # now every one is idle
    assert client.post("/api/sessions", json={"image": "a_shapes.png"}).is_success
    assert client.get(f"/api/sessions/{ids[0]}").status_code == 404  # the oldest idle one


def test_the_labels_folder_must_be_writable_at_start(tiny_model_dir, images_dir, tmp_path):
    """Checked by writing, not by mode bits (root passes those; a read-only mount does not)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InvalidInput, match="labels folder .* is not writable"):
        create_app(LabellerSettings(model=tiny_model_dir, images=images_dir,
                                    out=blocker / "labels", threads=1, prefetch=0))


def test_strokes_are_saved_replayed_after_a_restart_and_undone(tiny_model_dir, images_dir, out,
                                                               engine_mask):
    from focsam_onnx.serve.strokes import Stroke, apply_strokes

    brush = {"points": [[10, 10], [40, 10]], "radius": 3, "erase": False}
    with serving(tiny_model_dir, images_dir, out) as client:
        open_ready(client, "a_shapes.png")
        live = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()
        click(client, live["session_id"], 170, 125)
        state = client.post(f"/api/sessions/{live['session_id']}/strokes", json=brush).json()
        assert state["strokes"] == [{**brush, "after_prompts": 1}]
        assert client.post(f"/api/sessions/{live['session_id']}/strokes",
                           json={**brush, "radius": 10_000}).status_code == 422
    expected = apply_strokes(engine_mask(images_dir / "a_shapes.png", [(170, 125, True)]),
                             [Stroke.from_json(brush)])
    np.testing.assert_array_equal(saved_png(out, "a_shapes.png", 1) > 0, expected)
    with serving(tiny_model_dir, images_dir, out) as client:  # a restart: replayed
        open_ready(client, "a_shapes.png")
        resumed = client.post("/api/sessions", json={"image": "a_shapes.png",
                                                     "object_id": 1}).json()
        assert resumed["strokes"] == [{**brush, "after_prompts": 1}]
        np.testing.assert_array_equal(decoded(resumed["result"]["mask"]), expected)
        undone = client.post(f"/api/sessions/{resumed['session_id']}/undo").json()
        assert undone["strokes"] == [] and len(undone["prompts"]) == 1
    np.testing.assert_array_equal(saved_png(out, "a_shapes.png", 1) > 0,
                                  engine_mask(images_dir / "a_shapes.png", [(170, 125, True)]))


def test_an_image_dropped_for_others_is_opened_again_not_refused(client, monkeypatch):
    """Many annotators open more images than the server keeps: one person's next request on
    their image must not fail because other people's opens made room."""
    from focsam_onnx.serve import labeller

    monkeypatch.setattr(labeller, "MAX_OPEN_IMAGES", 1)
    open_ready(client, "a_shapes.png")
    open_ready(client, "b_flipped.png")  # a_shapes.png makes room
    assert client.get("/api/images/a_shapes.png/status").status_code == 404
    session = client.post("/api/sessions", json={"image": "a_shapes.png"})
    assert session.status_code == 200, session.text
    events = click(client, session.json()["session_id"], 170, 125)
    assert [e["event"] for e in events][-1] == "saved"
    assert client.get("/api/images/a_shapes.png/status").json()["state"] == "ready"
