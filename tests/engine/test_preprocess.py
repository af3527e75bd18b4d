"""Bilinear resize (against torch), preprocessing and click scaling (against golden)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focsam_onnx.engine.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    ImageGeometry,
    normalize,
    preprocess,
)
from focsam_onnx.engine.resize import resize_bilinear, resize_bilinear_cropped


@pytest.fixture
def torch_two_threads():
    """Upstream (and the golden data) ran torch's generic resize kernel, which torch picks for
    3-channel data only with more than one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def torch_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    batched = torch.from_numpy(np.ascontiguousarray(x))[None]
    out = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out[0].numpy()


@pytest.mark.parity
@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 448, 640), (717, 1024)),  # the golden encoder image
        ((3, 480, 384), (1024, 819)),  # session_2
        ((1, 256, 256), (1024, 1024)),  # low-res logits up
        ((1, 717, 1024), (448, 640)),  # and back down to pad32
        ((1, 683, 1024), (320, 480)),
        ((2, 37, 301), (129, 77)),  # odd sizes, up in y and down in x
        ((4, 96, 160), (96, 300)),  # one axis unchanged
        ((1, 1, 5), (80, 90)),  # a single input row
        # H + W <= 128: torch's four-tap kernel
        ((1, 1024, 1024), (64, 64)),
        ((1, 683, 1024), (32, 96)),
        ((3, 256, 256), (40, 60)),
        ((1, 717, 1024), (41, 87)),
    ],
)
def test_resize_matches_torch_bitwise(torch_two_threads, shape, size):
    rng = np.random.default_rng(sum(shape) + sum(size))
    x = (rng.standard_normal(shape) * 3.0).astype(np.float32)
    got = resize_bilinear(x, size)
    expected = torch_resize(x, size)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_resize_cropped_is_a_crop_of_the_full_resize():
    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    full = resize_bilinear(x, (1024, 1024))
    np.testing.assert_array_equal(resize_bilinear_cropped(x, (1024, 1024), (683, 1024)),
                                  full[:683])
    np.testing.assert_array_equal(resize_bilinear_cropped(x, (1024, 1024), (1024, 819)),
                                  full[:, :819])
    small = resize_bilinear(x, (40, 60))  # the four-tap kernel, chosen by the full size
    np.testing.assert_array_equal(resize_bilinear_cropped(x, (40, 60), (33, 50)),
                                  small[:33, :50])


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="float32"):
        resize_bilinear(np.zeros((4, 4), np.float64), (8, 8))
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(np.zeros((4, 4), np.float32), (0, 8))
    with pytest.raises(ValueError, match="crop"):
        resize_bilinear_cropped(np.zeros((4, 4), np.float32), (8, 8), (9, 8))


def test_spec_geometry_example():
    geometry = ImageGeometry.from_size(427, 640)
    assert geometry.padded_hw == (448, 640)
    assert geometry.resized_hw == (717, 1024)


@pytest.mark.parametrize(
    ("hw", "padded", "resized"),
    [((1024, 768), (1024, 768), (1024, 768)), ((1, 1), (32, 32), (1024, 1024)),
     ((33, 1000), (64, 1024), (64, 1024)), ((500, 333), (512, 352), (1024, 704))],
)
def test_geometry_sizes(hw, padded, resized):
    geometry = ImageGeometry.from_size(*hw)
    assert (geometry.padded_hw, geometry.resized_hw) == (padded, resized)


def test_geometry_rejects_empty_size():
    with pytest.raises(ValueError, match="0x5"):
        ImageGeometry.from_size(0, 5)


def test_normalisation_goes_by_channel_index_on_bgr():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    out = normalize(image)
    expected_blue = (np.float32(255) - np.float32(PIXEL_MEAN[0])) / np.float32(PIXEL_STD[0])
    assert out[0, 0, 0] == expected_blue
    assert out[2, 0, 0] == -np.float32(PIXEL_MEAN[2]) / np.float32(PIXEL_STD[2])


def test_preprocess_reproduces_golden_input(load_golden):
    encoder = load_golden("encoder")
    image_bgr = np.ascontiguousarray(encoder["image_rgb"][..., ::-1])
    network_input, geometry = preprocess(image_bgr)
    assert geometry.padded_hw == tuple(encoder["input_hw_padded32"])
    assert geometry.resized_hw == tuple(encoder["resized_hw"])
    assert network_input.shape == (1, 3, 1024, 1024) and network_input.dtype == np.float32
    max_diff = float(np.abs(network_input - encoder["input"]).max())
    assert max_diff <= 1e-5, f"max |diff| vs golden input = {max_diff}"
    # The resize copies torch's float32 arithmetic, so the input is in fact bitwise equal.
    np.testing.assert_array_equal(network_input, encoder["input"])


@pytest.mark.parametrize("name", ["session_1", "session_2"])
def test_session_geometry_and_neck_coords(golden, name):
    info = json.loads((golden / f"{name}.json").read_text())
    geometry = ImageGeometry.from_size(*info["image_hw"])
    assert list(geometry.padded_hw) == info["input_hw_padded32"]
    assert list(geometry.resized_hw) == info["resized_hw"]
    xy = np.array([[click["x"], click["y"]] for click in info["per_click"]])
    expected = np.array([click["neck_coord_xy"] for click in info["per_click"]], np.float32)
    np.testing.assert_array_equal(geometry.to_network(xy), expected)


@pytest.mark.parametrize("name", ["decoder_1click", "decoder_3clicks", "decoder_6clicks"])
def test_to_network_matches_golden_decoder_coords(load_golden, name):
    case = load_golden(name)
    geometry = ImageGeometry.from_size(427, 640)
    coords = geometry.to_network(case["clicks_yx"][:, ::-1])
    assert coords.dtype == np.float32
    np.testing.assert_array_equal(coords, case["coords"][0])


def test_to_network_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        ImageGeometry.from_size(10, 10).to_network(np.zeros(3))


def test_preprocess_rejects_non_bgr_uint8():
    with pytest.raises(ValueError, match="float32"):
        preprocess(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        preprocess(np.zeros((4, 4), np.uint8))


def test_geometry_modules_do_not_import_torch():
    modules = ["resize", "preprocess", "postprocess", "roi", "image_io"]
    code = ("import sys\n"
            + "".join(f"import focsam_onnx.engine.{m}\n" for m in modules)
            + "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
