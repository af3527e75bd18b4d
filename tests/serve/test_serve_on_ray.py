"""`serve --ray local`: a real server whose encodes run on a real local Ray pool write the
single-process bytes into its cache."""

from __future__ import annotations

import json
import time
import urllib.request

from typer.testing import CliRunner

runner = CliRunner()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def post(url: str) -> dict:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_serve_on_ray_local_encodes_on_the_pool_with_single_process_bytes(
        ray_installed, tiny_model_dir, six_images, tmp_path, serve_process, single_process_cache,
        cache_bytes):
    images = six_images
    reference = single_process_cache(images)
    cache = tmp_path / "cache"
    server = serve_process(tiny_model_dir, images, tmp_path / "labels", tmp_path / "log")
    server.argv += ["--cache-dir", str(cache), "--ray", "local", "--workers", "2",
                    "--prefetch", "5"]
    server.start()
    status = post(server.url + "api/images/img0.png/open")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = get(server.url + "api/images/img0.png/status")
        background = status["background"]
        if status["state"] == "ready" and background["encoded"] == 6 and not (
                background["in_flight"] or background["pending"]):
            break
        time.sleep(0.1)
    # The server opened no encoder of its own: every entry came from the two workers.
    assert status["state"] == "ready" and status["from_cache"] is False, status
    assert background["workers"] == 2
    assert cache_bytes(cache) == reference and len(reference) == 12
    post(server.url + "api/images/img3.jpg/open")
    while (status := get(server.url + "api/images/img3.jpg/status"))["state"] == "encoding":
        time.sleep(0.05)
    assert status["state"] == "ready" and status["from_cache"] is True  # pre-encoded
