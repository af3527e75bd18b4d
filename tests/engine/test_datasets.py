"""Dataset readers on small synthetic trees in each dataset's layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from focsam_onnx.engine.datasets import (
    DATASETS,
    Sample,
    iter_samples,
    open_dataset,
)

H, W = 6, 8


def _image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 3), value, np.uint8))


def _mask(path: Path, array: np.ndarray, mode: str = "L") -> None:
    """Write a mask PNG; mode "P" stores the values as palette indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putdata(array.astype(np.uint8).ravel().tolist())
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.save(path)


def _pattern(*values: int) -> np.ndarray:
    """(H, W) map whose first rows hold the given values, rest 0."""
    array = np.zeros((H, W), np.uint8)
    for row, value in enumerate(values):
        array[row] = value
    return array


def _ids(samples: list[Sample]) -> list[str]:
    return [s.id for s in samples]


def test_grabcut_palette_masks_order_and_bgr(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    (tmp_path / "img").mkdir()
    Image.fromarray(rgb).save(tmp_path / "img" / "b.png")
    _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "img" / "c.png")  # no mask: not a sample
    _mask(tmp_path / "gt" / "a#001.png", _pattern(1, 255, 0, 1), mode="P")
    _mask(tmp_path / "gt" / "b#001.png", _pattern(0, 1), mode="P")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "val.txt").write_text("ignored\n")

    samples = open_dataset("grabcut", tmp_path)
    assert _ids(samples) == ["a", "b"]
    sample_id, image, gt = samples[1].load()
    assert sample_id == "b"
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [30, 20, 10]  # BGR
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(1, 0, 0, 1))  # 255 band -> 0
    assert gt.dtype == np.uint8 and gt.sum() == W


def test_berkeley_grey_masks(tmp_path):
    for stem in ("x2", "x1"):
        _image(tmp_path / "img" / f"{stem}.jpg")
    _mask(tmp_path / "gt" / "x1#001.png", _pattern(1, 128, 255))
    _mask(tmp_path / "gt" / "x2#001.png", _pattern(0, 0, 1))
    _mask(tmp_path / "gt" / "x2#002.png", _pattern(1, 1, 1))  # upstream pairs #001 only
    samples = open_dataset("berkeley", tmp_path)
    assert _ids(samples) == ["x1", "x2"]
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(1))
    np.testing.assert_array_equal(samples[1].load_gt(), _pattern(0, 0, 1))


def test_davis_unchanged_decode(tmp_path):
    _image(tmp_path / "img" / "bear.jpg")
    _image(tmp_path / "img" / "alpha.jpg")
    _mask(tmp_path / "gt" / "bear#001.png", _pattern(255, 1, 0), mode="P")
    _mask(tmp_path / "gt" / "alpha#001.png", _pattern(2, 1))
    samples = open_dataset("davis", tmp_path)
    assert _ids(samples) == ["alpha", "bear"]
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(0, 1))
    np.testing.assert_array_equal(samples[1].load_gt(), _pattern(0, 1))


def _sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {
        "Segmentation": segmentation.astype(np.uint8),
        "Boundaries": np.zeros((1, 1), dtype=object),
        "Categories": np.array([[15], [7]], np.uint8),
    }
    savemat(str(path), {"GTinst": struct})


def test_sbd_one_sample_per_instance(tmp_path):
    seg_b = _pattern(3, 1, 3, 0, 1)
    seg_a = _pattern(2)
    for stem in ("2008_b", "2008_a", "2008_train"):
        _image(tmp_path / "img" / f"{stem}.jpg")
    _sbd_mat(tmp_path / "inst" / "2008_b.mat", seg_b)
    _sbd_mat(tmp_path / "inst" / "2008_a.mat", seg_a)
    _sbd_mat(tmp_path / "inst" / "2008_train.mat", _pattern(1))
    _sbd_mat(tmp_path / "cls" / "2008_b.mat", _pattern(9))  # class maps are not instances
    (tmp_path / "val.txt").write_text("2008_b\n2008_a\n")

    samples = open_dataset("sbd", tmp_path)
    assert _ids(samples) == ["2008_a#002", "2008_b#001", "2008_b#003"]
    assert [s.object_id for s in samples] == [2, 1, 3]
    np.testing.assert_array_equal(samples[1].load_gt(), (seg_b == 1).astype(np.uint8))
    np.testing.assert_array_equal(samples[2].load_gt(), (seg_b == 3).astype(np.uint8))
    assert samples[2].image_path.name == "2008_b.jpg"


def test_sbd_needs_val_list(tmp_path):
    with pytest.raises(ValueError, match="val.txt"):
        open_dataset("sbd", tmp_path)


def test_cod10k_camouflaged_subset_and_255(tmp_path):
    for stem in ("COD10K-CAM-2", "COD10K-CAM-1", "COD10K-NonCAM-1"):
        _image(tmp_path / "Test" / "Image" / f"{stem}.jpg")
        _mask(tmp_path / "Test" / "GT_Object" / f"{stem}.png", _pattern(255, 1, 128))
    rgb_mask = np.zeros((H, W, 3), np.uint8)
    rgb_mask[0] = 255
    Image.fromarray(rgb_mask).save(tmp_path / "Test" / "GT_Object" / "COD10K-CAM-2.png")
    (tmp_path / "Info").mkdir()
    (tmp_path / "Info" / "CAM_test.txt").write_text(
        "Image/COD10K-CAM-2.jpg 3 1\nImage/COD10K-CAM-1.jpg 2 1\n\n"
    )
    samples = open_dataset("cod10k", tmp_path)
    assert _ids(samples) == ["COD10K-CAM-1", "COD10K-CAM-2"]
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(1, 1))  # 255 and literal 1
    np.testing.assert_array_equal(samples[1].load_gt(), _pattern(1))  # RGB white -> L 255


def test_cod10k_layout_error_names_expected_folders(tmp_path):
    with pytest.raises(ValueError, match="Test/Image"):
        open_dataset("cod10k", tmp_path)


def test_mvtec_keys_exclusions_and_255(tmp_path):
    cases = [
        ("bottle", "broken_large", "001"),
        ("bottle", "broken_large", "000"),
        ("transistor", "cut_lead", "000"),
        ("transistor", "misplaced", "000"),
        ("transistor", "bent_lead", "000"),
    ]
    for cls, defect, n in cases:
        _image(tmp_path / cls / "test" / defect / f"{n}.png")
        _mask(tmp_path / cls / "ground_truth" / defect / f"{n}_mask.png", _pattern(255, 0, 1))
    _image(tmp_path / "bottle" / "test" / "good" / "000.png")
    _image(tmp_path / "bottle" / "train" / "good" / "000.png")
    samples = open_dataset("mvtec", tmp_path)
    assert _ids(samples) == [
        "bottle_broken_large_000", "bottle_broken_large_001", "transistor_bent_lead_000",
    ]
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(1, 0, 1))


def test_generic_folder_reader(tmp_path):
    _image(tmp_path / "images" / "b.jpg")
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "orphan.jpg")
    _mask(tmp_path / "masks" / "a.png", _pattern(0, 200, 1))
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as foreground
    rgba[1, :, 2] = 9
    Image.fromarray(rgba).save(tmp_path / "masks" / "b.png")
    samples = open_dataset("folder", tmp_path)
    assert _ids(samples) == ["a", "b"]
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(0, 1, 1))
    np.testing.assert_array_equal(samples[1].load_gt(), _pattern(0, 1))


def test_empty_objects_can_be_skipped_and_reported(tmp_path):
    for stem in ("a", "b", "c"):
        _image(tmp_path / "img" / f"{stem}.png")
    _mask(tmp_path / "gt" / "a#001.png", _pattern(1))
    _mask(tmp_path / "gt" / "b#001.png", _pattern(255, 255))  # only a void band: empty object
    _mask(tmp_path / "gt" / "c#001.png", _pattern(0, 1))
    samples = open_dataset("grabcut", tmp_path)

    skipped: list[str] = []
    loaded = list(iter_samples(samples, skipped))
    assert [sample_id for sample_id, _, _ in loaded] == ["a", "c"]
    assert skipped == ["b"]
    assert all(gt.any() for _, _, gt in loaded)

    everything = list(iter_samples(samples))
    assert [sample_id for sample_id, _, _ in everything] == ["a", "b", "c"]
    assert not everything[1][2].any()


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    sample = Sample("broken", bad, bad)
    with pytest.raises(ValueError, match="broken.png"):
        sample.load_image()


def test_image_and_mask_size_mismatch(tmp_path):
    _image(tmp_path / "img" / "a.png")
    _mask(tmp_path / "gt" / "a#001.png", np.ones((H + 1, W), np.uint8))
    (sample,) = open_dataset("grabcut", tmp_path)
    with pytest.raises(ValueError, match="a#001.png"):
        sample.load()


def test_duplicate_keys_are_refused(tmp_path):
    _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "copy" / "a.png")
    _mask(tmp_path / "gt" / "a#001.png", _pattern(1))
    with pytest.raises(ValueError, match="a#001"):
        open_dataset("grabcut", tmp_path)


def test_registry_and_root_errors(tmp_path):
    assert set(DATASETS) == {"grabcut", "berkeley", "davis", "sbd", "cod10k", "mvtec", "folder"}
    with pytest.raises(ValueError, match="unknown dataset 'pascal'"):
        open_dataset("pascal", tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        open_dataset("grabcut", tmp_path / "missing")
    with pytest.raises(ValueError, match="#001.png"):
        open_dataset("grabcut", tmp_path)
    with pytest.raises(ValueError, match="images/ and masks/"):
        open_dataset("folder", tmp_path)


def test_sample_rejects_unknown_gt_format(tmp_path):
    with pytest.raises(ValueError, match="'jpeg2000'"):
        Sample("x", tmp_path / "x.png", tmp_path / "x.png", 1, "jpeg2000")
