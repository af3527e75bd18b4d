"""Fixtures of the web app's tests: an image folder (one image EXIF-rotated) and the engine's
own answer for a list of clicks, the reference every saved mask is held against."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write_rotated_jpeg(path: Path) -> None:
    """A JPEG stored landscape with EXIF orientation 6: viewers and the engine show it upright."""
    with Image.open(EXAMPLES / "shapes.png") as image:
        rgb = image.convert("RGB")
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgb.save(path, quality=95, exif=exif)


@pytest.fixture()
def images_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(EXAMPLES / "shapes.png", folder / "a_shapes.png")
    with Image.open(EXAMPLES / "shapes.png") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b_flipped.png")
    write_rotated_jpeg(folder / "c_rotated.jpg")
    return folder


@pytest.fixture(scope="session")
def reference_engine(tiny_model_dir):
    from focsam_onnx.engine.focsam_engine import FocSAMEngine

    return FocSAMEngine.open(tiny_model_dir, threads=1)


def mask_of(engine):
    """`mask_of(engine)(image_path, [(x, y, positive), ...])` -> `engine`'s (H, W) bool mask."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.image_io import load_image

    def run(path: Path, clicks) -> np.ndarray:
        session = ClickSession(engine, engine.open_image(load_image(path)))
        for x, y, positive in clicks:
            result = session.click(x, y, positive)
        return result.mask

    return run


@pytest.fixture(scope="session")
def engine_mask(reference_engine):
    """`engine_mask(image_path, [(x, y, positive), ...])` -> the engine's (H, W) bool mask."""
    return mask_of(reference_engine)


@pytest.fixture(scope="session")
def demo_engine_mask(demo_engine):
    """As `engine_mask`, on the packaged demo model."""
    return mask_of(demo_engine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`focsam-onnx serve` in a subprocess; `kill()` is SIGKILL, as a crash would be."""

    def __init__(self, model: Path, images: Path, out: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.argv = [sys.executable, "-m", "focsam_onnx.cli", "serve", "--model", str(model),
                     "--images", str(images), "--out", str(out), "--port", str(self.port),
                     "--threads", "1", "--prefetch", "1"]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "api/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server did not come up: {self.log.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture()
def serve_process():
    """`serve_process(model, images, out, log)` -> a Server (not started); every one made is
    killed at the end of the test."""
    made: list[Server] = []

    def make(*args) -> Server:
        made.append(Server(*args))
        return made[-1]

    yield make
    for server in made:
        server.kill()
