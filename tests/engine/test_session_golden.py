"""Whole 20-click golden sessions through the ONNX engine: replayed and simulated."""

from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.prompts import Click
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import RunSettings, evaluate
from focsam_onnx.evaluation.metrics import binary_iou

SESSIONS = ["session_1", "session_2"]
MASK_STEPS = {1: "mask_click01", 2: "mask_click02", 5: "mask_click05", 20: "mask_click20"}


@pytest.fixture(scope="module")
def engine(golden_model_dir):
    return FocSAMEngine.open(golden_model_dir, threads=2)


def load_session(golden, load_golden, name):
    return load_golden(name), json.loads((golden / f"{name}.json").read_text())


@pytest.mark.parametrize("name", SESSIONS)
def test_replayed_clicks_reproduce_upstream(engine, golden, load_golden, name):
    data, record = load_session(golden, load_golden, name)
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])  # upstream reads BGR
    session = ClickSession(engine, engine.open_image(image))
    gt = data["gt_mask"]
    for step, (y, x, label) in enumerate(data["clicks_yx_label"], 1):
        result = session.click(int(x), int(y), bool(label))
        assert abs(binary_iou(result.mask, gt) - data["ious"][step - 1]) <= 1e-4, step
        assert result.decoded_on_refined == (step >= 2)
        if step == 2:
            assert result.roi.raw_bbox == tuple(data["refine_roi_bbox_raw"])
            assert result.roi.bbox == tuple(data["refine_roi_bbox"])
        if step in MASK_STEPS:
            differing = np.count_nonzero(result.mask != data[MASK_STEPS[step]].astype(bool))
            assert differing <= 0.0005 * gt.size, (step, differing)
    assert [c.positive for c in session.clicks] == [r["label"] == 1
                                                    for r in record["per_click"]]


def test_refine_step_decodes_coarse_mask_on_original_embeddings(engine, golden, load_golden):
    data, _ = load_session(golden, load_golden, "session_1")
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])
    encoded = engine.open_image(image)
    (y0, x0, l0), (y1, x1, l1) = data["clicks_yx_label"][:2]
    session = ClickSession(engine, encoded)
    first = session.click(int(x0), int(y0), bool(l0))
    coords = encoded.geometry.to_network(np.array([[x0, y0], [x1, y1]], np.float64))
    coarse = engine.decode(encoded.embeddings, coords, np.array([l0, l1], np.float32),
                           first.low_res_logits)
    assert np.max(np.abs(coarse.low_res_logits - data["refine_coarse_logits"])) <= 1e-5
    assert np.max(np.abs(coarse.mask_token - data["refine_mask_token"])) <= 1e-4


@pytest.mark.parametrize("name", SESSIONS)
def test_evaluation_reproduces_simulated_session(engine, golden, load_golden, name, tmp_path):
    data, record = load_session(golden, load_golden, name)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "images" / f"{name}.png"), data["image_rgb"][..., ::-1])
    cv2.imwrite(str(root / "masks" / f"{name}.png"), data["gt_mask"] * 255)
    settings = RunSettings("folder", "focsam", record["seed"], "upstream", engine.model.model_id)
    metrics = evaluate(engine, open_dataset("folder", root), tmp_path / "out", settings)
    (result,) = json.loads((tmp_path / "out" / "per_sample.json").read_text())
    expected = [{"x": int(x), "y": int(y), "positive": bool(label)}
                for y, x, label in data["clicks_yx_label"]]
    assert result["clicks"] == expected
    assert np.max(np.abs(np.array(result["ious"]) - data["ious"])) <= 1e-4
    assert metrics["NoC@85"] == record["noc85"] and metrics["NoC@90"] == record["noc90"]
    assert (tmp_path / "out" / "miou_curve.png").stat().st_size > 0


def test_undo_restores_the_state_before_the_click(engine, golden, load_golden):
    data, _ = load_session(golden, load_golden, "session_2")
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])
    session = ClickSession(engine, engine.open_image(image))
    clicks = [(int(x), int(y), bool(label)) for y, x, label in data["clicks_yx_label"][:3]]
    first = session.click(*clicks[0])
    second = session.click(*clicks[1])
    session.click(*clicks[2])
    assert session.undo() is second
    again = session.click(*clicks[2])
    assert again.decoded_on_refined and again.roi is None  # the refined embeddings were kept
    session.undo()
    assert session.undo() is first  # undoing the 2nd click drops the refined embeddings
    redo = session.click(*clicks[1])
    assert redo.roi is not None and np.array_equal(redo.low_res_logits, second.low_res_logits)
    session.reset()
    assert session.clicks == () and session.result is None


def test_plain_sam_mode_never_refines(engine, golden, load_golden):
    data, _ = load_session(golden, load_golden, "session_1")
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])
    session = ClickSession(engine, engine.open_image(image), refine_at=None)
    rng = random.Random(0)
    for _ in range(3):
        y, x = rng.randrange(image.shape[0]), rng.randrange(image.shape[1])
        assert not session.step(Click(x, y, True)).decoded_on_refined
