"""Fixtures of the web app's tests: an image folder (one image EXIF-rotated) and the engine's
own answer for a list of clicks, the reference every saved mask is held against."""

from __future__ import annotations

import shutil
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


@pytest.fixture(scope="session")
def engine_mask(reference_engine):
    """`engine_mask(image_path, [(x, y, positive), ...])` -> the engine's (H, W) bool mask."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.image_io import load_image

    def run(path: Path, clicks) -> np.ndarray:
        session = ClickSession(reference_engine, reference_engine.open_image(load_image(path)))
        for x, y, positive in clicks:
            result = session.click(x, y, positive)
        return result.mask

    return run
