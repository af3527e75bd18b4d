"""The record is the truth: two people on one object, a crash between any two writes, and a
damaged record that stays its own image's problem."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from focsam_onnx.engine.prompts import Click  # noqa: E402
from focsam_onnx.serve import annotations  # noqa: E402
from focsam_onnx.serve.annotations import AnnotationStore, SavedObject  # noqa: E402
from focsam_onnx.serve.app import create_app  # noqa: E402
from focsam_onnx.serve.labeller import LabellerSettings  # noqa: E402


@contextmanager
def serving(model, images, out):
    settings = LabellerSettings(model=model, images=images, out=out, threads=1, prefetch=0)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def open_ready(client, name: str) -> None:
    status = client.post(f"/api/images/{name}/open").json()
    while status["state"] == "encoding":
        status = client.get(f"/api/images/{name}/status").json()
    assert status["state"] == "ready", status


def agree(folder, obj: SavedObject) -> bool:
    """The record's RLE and the PNG it names hold the same mask."""
    png = cv2.imread(str(folder / obj.mask_file), cv2.IMREAD_UNCHANGED)
    return png is not None and np.array_equal(png > 0, obj.mask())


def test_two_clients_on_one_object_lose_no_acknowledged_click(tiny_model_dir, images_dir,
                                                               tmp_path, engine_mask):
    out = tmp_path / "labels"
    with serving(tiny_model_dir, images_dir, out) as client:
        open_ready(client, "a_shapes.png")
        first = client.post("/api/sessions", json={"image": "a_shapes.png"}).json()
        client.post(f"/api/sessions/{first['session_id']}/clicks", json={"x": 170, "y": 125})
        tabs = [client.post("/api/sessions", json={"image": "a_shapes.png",
                                                   "object_id": first["object_id"]}).json()
                for _ in range(2)]
        assert tabs[0]["session_id"] == tabs[1]["session_id"] == first["session_id"]
        acknowledged: list[dict] = []
        versions: list[int] = []  # each save's, as its answer says
        lock = threading.Lock()

        def clicker(tab: int) -> None:
            rng = np.random.default_rng(tab)
            for _ in range(10):
                click = {"x": int(rng.integers(320)), "y": int(rng.integers(240)),
                         "positive": bool(rng.integers(2))}
                lines = client.post(f"/api/sessions/{tabs[tab]['session_id']}/clicks",
                                    json=click).text.splitlines()
                last = json.loads(lines[-1])
                if last["event"] == "saved":
                    with lock:
                        acknowledged.append(click)
                        versions.append(last["version"])

        threads = [threading.Thread(target=clicker, args=(tab,)) for tab in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(acknowledged) == 20
        (saved,) = client.get("/api/images/a_shapes.png/objects").json()["objects"]
        assert len(saved["prompts"]) == 21
        assert all(c in saved["prompts"] for c in acknowledged)
        assert sorted(versions) == list(range(2, 22)) and saved["version"] == 21
        one = client.get(f"/api/images/a_shapes.png/objects/{first['object_id']}").json()
        assert one == saved  # what a page fetches when another tab changed the object
        views = [client.get(f"/api/sessions/{tab['session_id']}").json() for tab in tabs]
        assert views[0]["prompts"] == views[1]["prompts"] == saved["prompts"]
    record = SavedObject.from_coco(json.loads(
        (out / "a_shapes.png" / "annotations.json").read_text())["annotations"][0])
    clicks = [(p.x, p.y, p.positive) for p in record.prompts]
    np.testing.assert_array_equal(record.mask(), engine_mask(images_dir / "a_shapes.png", clicks))
    assert agree(out / "a_shapes.png", record)


class Crash(Exception):
    pass


def test_a_crash_between_any_two_writes_leaves_record_and_png_agreeing(tmp_path, monkeypatch):
    """Kill the save at every file operation in turn: after a restart the record and the PNG it
    names agree (the old state or the new one), and no PNG is left that no record names."""
    masks = [np.zeros((40, 50), bool) for _ in range(3)]
    for i, mask in enumerate(masks):
        mask[5 + i:20 + 3 * i, 10:30 + i] = True
    operations = 0

    def count(real):
        def wrapped(*args, **kwargs):
            nonlocal operations
            operations += 1
            if operations == crash_at:
                raise Crash
            return real(*args, **kwargs)
        return wrapped

    real_write, real_unlink = annotations.atomic_write, type(tmp_path).unlink
    for crash_at in range(1, 12):
        out, operations = tmp_path / f"run{crash_at}", 0
        monkeypatch.setattr(annotations, "atomic_write", count(real_write))
        monkeypatch.setattr(type(tmp_path), "unlink", count(real_unlink))
        store = AnnotationStore(out)
        try:
            for step, mask in enumerate(masks):
                store.save("img.png", 1, mask, (Click(step, step),), 0.9, 1, "model")
            store.delete("img.png", 1)
        except Crash:
            pass
        monkeypatch.setattr(annotations, "atomic_write", real_write)
        monkeypatch.setattr(type(tmp_path), "unlink", real_unlink)
        restarted = AnnotationStore(out)
        objects = restarted.objects("img.png")
        folder = out / "img.png"
        assert all(agree(folder, obj) for obj in objects), crash_at
        pngs = sorted(p.name for p in folder.glob("object_*.png")) if folder.exists() else []
        assert pngs == sorted(obj.mask_file for obj in objects), crash_at
    assert operations < crash_at  # the last run went through without a crash


@pytest.mark.parametrize("record", ["{broken", '{"info": [], "images": [], "annotations": []}',
                                    '{"info": {}, "images": [{"id": 1}], "annotations": []}',
                                    '{"info": {}, "images": [{"id": 1, "width": 320, '
                                    '"height": 240}], "annotations": [{"id": "x"}]}'])
def test_a_damaged_record_affects_its_own_image_only(tiny_model_dir, images_dir, tmp_path,
                                                     record):
    out = tmp_path / "labels"
    (out / "a_shapes.png").mkdir(parents=True)
    (out / "a_shapes.png" / "annotations.json").write_text(record)
    with serving(tiny_model_dir, images_dir, out) as client:
        listed = {i["name"]: i for i in client.get("/api/images").json()["images"]}
        assert listed["a_shapes.png"]["objects"] is None
        assert "will not overwrite" in listed["a_shapes.png"]["damaged"]
        assert listed["b_flipped.png"]["objects"] == 0
        objects = client.get("/api/images/a_shapes.png/objects")
        assert objects.status_code == 409 and "unreadable" in objects.json()["detail"]
        coco = client.get("/api/annotations").json()
        assert "a_shapes.png" in coco["damaged"]
        open_ready(client, "a_shapes.png")
        refused = client.post("/api/sessions", json={"image": "a_shapes.png"})
        assert refused.status_code == 409
        open_ready(client, "b_flipped.png")  # the rest of the folder works
        sid = client.post("/api/sessions", json={"image": "b_flipped.png"}).json()["session_id"]
        lines = client.post(f"/api/sessions/{sid}/clicks", json={"x": 5, "y": 5}).text
        assert json.loads(lines.splitlines()[-1])["event"] == "saved"
    assert (out / "a_shapes.png" / "annotations.json").read_text() == record
