"""Image loading (BGR, errors that name the file) and the content hash."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from focsam_onnx.engine.image_io import ImageError, image_content_hash, load_image


@pytest.fixture
def textured_bgr() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[:, :10] = (255, 0, 0)  # a blue stripe, to catch a channel swap
    return image


def test_png_round_trip_is_exact_and_bgr(tmp_path: Path, textured_bgr: np.ndarray):
    path = tmp_path / "image.png"
    assert cv2.imwrite(str(path), textured_bgr)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, textured_bgr)
    assert tuple(loaded[0, 0]) == (255, 0, 0)


def test_load_matches_cv2_imread_for_jpeg_and_gray(tmp_path: Path, textured_bgr: np.ndarray):
    jpeg = tmp_path / "image.jpg"
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(jpeg), textured_bgr)
    cv2.imwrite(str(gray), textured_bgr[..., 1])
    for path in (jpeg, gray):
        expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
        loaded = load_image(str(path))
        assert loaded.shape == (37, 53, 3)
        np.testing.assert_array_equal(loaded, expected)


def test_missing_file_names_the_path(tmp_path: Path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png"):
        load_image(path)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_empty_and_garbage_files(tmp_path: Path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all" * 10)
    for path in (empty, garbage):
        with pytest.raises(ImageError, match=path.name):
            load_image(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_rejected(tmp_path: Path, suffix: str):
    # Noise compresses badly, so the encoded data is long and truncation bites mid-stream,
    # where OpenCV alone would hand back a partly grey image.
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    full = tmp_path / f"full{suffix}"
    cv2.imwrite(str(full), image)
    data = full.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match=truncated.name):
        load_image(truncated)


def test_content_hash_depends_on_bytes_and_shape(textured_bgr: np.ndarray):
    digest = image_content_hash(textured_bgr)
    assert digest == image_content_hash(textured_bgr.copy())
    assert len(digest) == 64 and int(digest, 16) >= 0
    changed = textured_bgr.copy()
    changed[5, 5, 2] ^= 1
    assert image_content_hash(changed) != digest
    flat = textured_bgr.reshape(53, 37, 3)  # same bytes, other shape
    assert image_content_hash(flat) != digest
    # A non-contiguous view hashes as its contiguous copy.
    flipped = textured_bgr[:, ::-1]
    assert image_content_hash(flipped) == image_content_hash(np.ascontiguousarray(flipped))
