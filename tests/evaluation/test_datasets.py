"""Dataset readers on small synthetic trees in each dataset's layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from focsam_onnx.evaluation.datasets import (
    DATASETS,
    HQSEG44K_VAL,
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
    assert set(DATASETS) == {"grabcut", "berkeley", "davis", "sbd", "cod10k", "mvtec", "folder",
                             "hqseg44k", "coco"}
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


def _hqseg_tree(root: Path, stems: dict[str, tuple[str, ...]]) -> None:
    """SAM-HQ's val layout; each subset gets the given image stems, mask value = its index + 1."""
    for subset, image_dir, mask_dir in HQSEG44K_VAL:
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / mask_dir).mkdir(parents=True, exist_ok=True)
        for index, stem in enumerate(stems.get(subset, ())):
            _image(root / image_dir / f"{stem}.jpg")
            _mask(root / mask_dir / f"{stem}.png", _pattern(*([0] * index), 200))


def test_hqseg44k_subset_order_file_name_order_and_any_channel_foreground(tmp_path):
    _hqseg_tree(tmp_path, {"DIS5K-VD": ("b", "a"), "ThinObject5K-TE": ("x",),
                           "COIFT": ("c",), "HRSOD": ("a-1", "a")})
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha is not foreground
    rgba[2, 3, 1] = 7  # green only
    rgba[4, 0, 2] = 1  # blue only
    Image.fromarray(rgba).save(tmp_path / "thin_object_detection/COIFT/masks/c.png")
    samples = open_dataset("hqseg44k", tmp_path)
    # "a-1.jpg" sorts before "a.jpg" by file name ('-' < '.'), although stem "a" < "a-1".
    assert _ids(samples) == ["DIS5K-VD/a", "DIS5K-VD/b", "ThinObject5K-TE/x", "COIFT/c",
                             "HRSOD/a-1", "HRSOD/a"]
    assert [s.subset for s in samples] == ["DIS5K-VD", "DIS5K-VD", "ThinObject5K-TE", "COIFT",
                                           "HRSOD", "HRSOD"]
    assert samples[0].image_path == tmp_path / "DIS5K/DIS-VD/im/a.jpg"
    assert samples[0].gt_path == tmp_path / "DIS5K/DIS-VD/gt/a.png"
    np.testing.assert_array_equal(samples[0].load_gt(), _pattern(0, 1))  # "a" was written 2nd
    np.testing.assert_array_equal(samples[1].load_gt(), _pattern(1))
    expected = np.zeros((H, W), np.uint8)
    expected[2, 3] = expected[4, 0] = 1
    np.testing.assert_array_equal(samples[3].load_gt(), expected)
    _, image, gt = samples[4].load()
    assert image.shape == (H, W, 3) and gt.shape == (H, W)


def test_hqseg44k_wrong_layout_names_the_expected_folder(tmp_path):
    _hqseg_tree(tmp_path / "sam-hq", {"DIS5K-VD": ("a",)})
    with pytest.raises(ValueError, match=r"DIS5K/DIS-VD/im not found.*SAM-HQ's data folder"):
        open_dataset("hqseg44k", tmp_path)  # one level too high
    (tmp_path / "sam-hq/thin_object_detection/HRSOD/masks_max255").rmdir()
    expected = r"HRSOD/masks_max255 not found.*HRSOD images in .*/images/ and masks in"
    with pytest.raises(ValueError, match=expected):
        open_dataset("hqseg44k", tmp_path / "sam-hq")


def test_hqseg44k_image_without_mask_is_refused(tmp_path):
    _hqseg_tree(tmp_path, {"COIFT": ("a", "b")})
    (tmp_path / "thin_object_detection/COIFT/masks/b.png").unlink()
    with pytest.raises(ValueError, match="1 COIFT images have no mask.*b.jpg"):
        open_dataset("hqseg44k", tmp_path)


def _panoptic_png(path: Path, ids: np.ndarray) -> None:
    """Encode a segment-id map the COCO way: R = id % 256, G = id // 256 % 256, B = id // 65536."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _coco_tree(root: Path) -> dict[str, np.ndarray]:
    """Two val images (JSON order 139 then 42), a train image; the annotation file."""
    big, small = 3 * 65536 + 2 * 256 + 1, 1 + 256  # ids needing all three channels / two
    maps = {"139": np.zeros((H, W), np.int64), "42": np.zeros((H, W), np.int64)}
    maps["139"][0, :] = big
    maps["139"][1, :2] = small
    maps["139"][2, :] = 256  # G only: must not be confused with id 1
    maps["42"][:, 0] = 1
    for stem, ids in maps.items():
        _image(root / "val2017" / f"{int(stem):012d}.jpg")
        _panoptic_png(root / "annotations/panoptic_val2017" / f"{int(stem):012d}.png", ids)
    _image(root / "train2017" / "000000000007.jpg")  # no annotation: not a sample
    annotation = {
        "categories": [{"id": 1, "isthing": 1}, {"id": 184, "isthing": 0}],
        "annotations": [
            {"file_name": "000000000139.png", "image_id": 139, "segments_info": [
                {"id": big, "category_id": 184, "iscrowd": 0},
                {"id": small, "category_id": 1, "iscrowd": 1},
                {"id": 256, "category_id": 1, "iscrowd": 0},
                {"id": 77, "category_id": 1, "iscrowd": 0}]},  # absent from the PNG: empty
            {"file_name": "000000000042.png", "image_id": 42, "segments_info": [
                {"id": 1, "category_id": 1, "iscrowd": 0}]},
            {"file_name": "000000000999.png", "image_id": 999, "segments_info": [
                {"id": 5, "category_id": 1, "iscrowd": 0}]},  # image not downloaded
        ]}
    (root / "annotations/panoptic_val2017.json").write_text(json.dumps(annotation))
    return maps


def test_coco_one_sample_per_segment_in_json_order_with_rgb_ids(tmp_path):
    maps = _coco_tree(tmp_path)
    samples = open_dataset("coco", tmp_path)
    assert _ids(samples) == ["000000000139#197121", "000000000139#257", "000000000139#256",
                             "000000000139#77", "000000000042#1"]
    assert [s.subset for s in samples] == ["stuff", "things", "things", "things", "things"]
    assert samples[0].image_path == tmp_path / "val2017/000000000139.jpg"
    assert samples[0].gt_path == tmp_path / "annotations/panoptic_val2017/000000000139.png"
    for sample in samples:
        stem, segment = sample.id.split("#")
        expected = (maps[str(int(stem))] == int(segment)).astype(np.uint8)
        np.testing.assert_array_equal(sample.load_gt(), expected)
    assert samples[0].load_gt()[0].all() and samples[2].load_gt()[2].all()
    skipped: list[str] = []
    assert [i for i, _, _ in iter_samples(samples, skipped)] == [
        "000000000139#197121", "000000000139#257", "000000000139#256", "000000000042#1"]
    assert skipped == ["000000000139#77"]


def test_coco_wrong_layout_names_the_expected_files(tmp_path):
    _coco_tree(tmp_path / "coco2017")
    (tmp_path / "coco2017/annotations/panoptic_val2017.json").rename(tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"no \*panoptic_val2017.json.*annotations/panoptic_val"):
        open_dataset("coco", tmp_path)
    (tmp_path / "other.json").rename(tmp_path / "coco2017/annotations/panoptic_val2017.json")
    for png in (tmp_path / "coco2017/annotations/panoptic_val2017").iterdir():
        png.unlink()
    with pytest.raises(ValueError, match=r"no COCO panoptic samples.*panoptic_val2017/<id>.png"):
        open_dataset("coco", tmp_path)
