"""The scene generator: deterministic per seed, separate seed streams, consistent masks."""

from __future__ import annotations

import numpy as np

from focsam_onnx.training.heldout import heldout_scene, write_folder_datasets
from focsam_onnx.training.scenes import (
    KINDS,
    STREAM_HELDOUT,
    STREAM_TRAIN,
    interior_point,
    make_scene,
    scene_seed,
)


def test_a_seed_gives_the_same_scene_every_time():
    for index in range(3):
        a = make_scene(scene_seed(STREAM_TRAIN, 0, index))
        b = make_scene(scene_seed(STREAM_TRAIN, 0, index))
        assert a.kinds == b.kinds
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)


def test_streams_and_seeds_give_different_scenes():
    base = make_scene(scene_seed(STREAM_TRAIN, 0, 5)).image
    for other in (scene_seed(STREAM_HELDOUT, 0, 5), scene_seed(STREAM_TRAIN, 1, 5),
                  scene_seed(STREAM_TRAIN, 0, 6)):
        image = make_scene(other).image
        assert image.shape != base.shape or not np.array_equal(image, base)


def test_objects_are_visible_disjoint_and_named():
    for index in range(6):
        scene = heldout_scene(index)
        height, width = scene.image.shape[:2]
        assert scene.image.dtype == np.uint8
        assert 224 <= min(height, width) <= max(height, width) <= 416
        assert scene.masks.shape == (len(scene.kinds), height, width)
        assert set(scene.kinds) <= set(KINDS)
        assert (scene.masks.sum(axis=0) <= 1).all()  # occlusion: each pixel has one owner
        assert (scene.masks.sum(axis=(1, 2)) >= 120).all()
        for mask in scene.masks[scene.compact()]:
            x, y = interior_point(mask)
            assert mask[y, x]


def test_heldout_folders_pair_each_object_with_its_image(tmp_path):
    from focsam_onnx.evaluation.datasets import open_dataset

    counts = write_folder_datasets(tmp_path, scenes=2)
    compact = open_dataset("folder", tmp_path / "compact")
    assert len(compact) == counts["compact"] > 0
    scene = heldout_scene(0)
    first = scene.compact()[0]
    assert compact[0].id == f"s0000_o{first}_{scene.kinds[first]}"
