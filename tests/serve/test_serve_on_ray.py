"""`serve --ray local`: a real server whose encodes run on a real local Ray pool write the
single-process bytes into its cache."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app

runner = CliRunner()


def ray_or_skip() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: CI installs the `ray` extra")
        pytest.skip("ray is not installed: pip install 'focsam-onnx[ray]'")


@pytest.fixture()
def images(tmp_path) -> Path:
    """Six different images (one JPEG) of different sizes."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(6):
        image = rng.integers(0, 256, (40 + 6 * i, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{i}.{'jpg' if i == 3 else 'png'}"), image)
    return folder


def single_process_cache(model: Path, images: Path, cache: Path) -> dict[str, bytes]:
    result = runner.invoke(app, ["embed", str(images), "--model", str(model), "--cache-dir",
                                 str(cache), "--threads", "1"])
    assert result.exit_code == 0, result.output
    return files(cache)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def post(url: str) -> dict:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_serve_on_ray_local_encodes_on_the_pool_with_single_process_bytes(
        tiny_model_dir, images, tmp_path, serve_process):
    ray_or_skip()
    reference = single_process_cache(tiny_model_dir, images, tmp_path / "reference")
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
    assert files(cache) == reference and len(reference) == 12
    post(server.url + "api/images/img3.jpg/open")
    while (status := get(server.url + "api/images/img3.jpg/status"))["state"] == "encoding":
        time.sleep(0.05)
    assert status["state"] == "ready" and status["from_cache"] is True  # pre-encoded
