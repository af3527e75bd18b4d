"""SIGKILL at random moments of a click loop: after every restart the record, the PNG it names
and a replay of its prompts agree."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np

from focsam_onnx.engine.prompts import prompts_from_json
from focsam_onnx.serve.annotations import SavedObject

ROUNDS = 5


def call(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def click_until_killed(server, stop: threading.Event) -> None:
    rng = np.random.default_rng()
    try:
        status = json.loads(call(server.url + "api/images/a_shapes.png/open", {}))
        while status["state"] == "encoding":
            status = json.loads(call(server.url + "api/images/a_shapes.png/status"))
        session = json.loads(call(server.url + "api/sessions", {"image": "a_shapes.png"}))
        while not stop.is_set():
            call(f"{server.url}api/sessions/{session['session_id']}/clicks",
                 {"x": int(rng.integers(320)), "y": int(rng.integers(240)),
                  "positive": bool(rng.integers(2))})
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        pass  # the server died under us: that is the point


def test_records_pngs_and_replays_agree_after_every_kill(serve_process, tiny_model_dir,
                                                         images_dir, tmp_path, engine_mask):
    out, rng = tmp_path / "labels", random.Random(0)
    checked = 0
    for round_ in range(ROUNDS):
        server = serve_process(tiny_model_dir, images_dir, out, tmp_path / f"log{round_}")
        server.start()
        stop = threading.Event()
        clicker = threading.Thread(target=click_until_killed, args=(server, stop))
        clicker.start()
        time.sleep(rng.uniform(1.0, 4.0))
        server.kill()
        stop.set()
        clicker.join(timeout=60)
        record = out / "a_shapes.png" / "annotations.json"
        if not record.exists():
            continue
        for entry in json.loads(record.read_text())["annotations"]:
            saved = SavedObject.from_coco(entry)
            png = cv2.imread(str(record.parent / saved.mask_file), cv2.IMREAD_UNCHANGED)
            assert png is not None, (round_, saved.mask_file)
            np.testing.assert_array_equal(png > 0, saved.mask())
            clicks = [(p.x, p.y, p.positive) for p in prompts_from_json(entry["prompts"])]
            np.testing.assert_array_equal(saved.mask(),
                                          engine_mask(images_dir / "a_shapes.png", clicks))
            checked += 1
    assert checked >= ROUNDS - 1  # nearly every round saved a click before its kill


def test_ctrl_c_stops_the_server_cleanly(serve_process, tiny_model_dir, images_dir, tmp_path):
    """Stopping `serve` (SIGINT, as Ctrl-C) with the background encoder running prints no
    warning, no traceback and no leaked semaphore."""
    import signal

    log = tmp_path / "server.log"
    server = serve_process(tiny_model_dir, images_dir, tmp_path / "labels", log)
    server.start()
    call(server.url + "api/images/a_shapes.png/open", {})  # starts pre-encoding the next one
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=120) == 0
    output = log.read_text()
    for noise in ("Traceback", "leaked", "Warning", "Error"):
        assert noise not in output, output
