"""Box prompts in the engine: the point list, the FocSAM protocol with a box, bad boxes, the CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.postprocess import logits_to_mask
from focsam_onnx.engine.prompts import point_list

IMAGE = str(Path(__file__).resolve().parents[2] / "examples" / "shapes.png")
BOX = (40.0, 30.0, 230.0, 200.0)  # (x0, y0, x1, y1) in the 320x240 example's pixels


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> FocSAMEngine:
    return FocSAMEngine.open(tiny_model_dir, threads=2)


@pytest.fixture(scope="module")
def encoded(engine):
    return engine.open_image(IMAGE)


def test_point_list_sends_corners_instead_of_padding():
    coords, labels = point_list(np.array([[5.0, 6.0]]), np.array([1.0]), np.array([1, 2, 3, 4]))
    assert coords.tolist() == [[[5, 6], [1, 2], [3, 4]]] and labels.tolist() == [[1, 2, 3]]
    coords, labels = point_list(np.zeros((0, 2)), np.zeros(0), None)
    assert coords.tolist() == [[[0, 0]]] and labels.tolist() == [[-1]]


def test_box_first_then_refiner_at_the_second_step(engine, encoded):
    """Step 0: the box alone on the original embeddings. Step 1 (a click): the coarse decode of
    box + click + step 0's logits gives the ROI, the refiner runs, the box stays a prompt."""
    session = ClickSession(engine, encoded)
    first = session.set_box(*BOX)
    assert not first.decoded_on_refined and first.roi is None and session.box.corners == BOX
    net_box = encoded.geometry.to_network(np.array(BOX).reshape(2, 2)).reshape(4)
    alone = engine.decode(encoded.embeddings, np.zeros((0, 2)), np.zeros(0), None, net_box)
    np.testing.assert_array_equal(first.low_res_logits, alone.low_res_logits)
    assert not np.array_equal(first.low_res_logits,
                              engine.decode(encoded.embeddings, np.zeros((0, 2)), np.zeros(0),
                                            None).low_res_logits)

    second = session.click(150, 110)
    assert second.decoded_on_refined and second.roi is not None
    coords = encoded.geometry.to_network(np.array([[150.0, 110.0]]))
    coarse = engine.decode(encoded.embeddings, coords, np.ones(1), first.low_res_logits, net_box)
    roi = engine.roi(coarse.low_res_logits)
    assert roi.bbox == second.roi.bbox
    np.testing.assert_array_equal(roi.token_mask, second.roi.token_mask)
    refined = engine.refine(encoded.embeddings, coarse.mask_token, roi)
    final = engine.decode(refined, coords, np.ones(1), first.low_res_logits, net_box)
    np.testing.assert_array_equal(second.low_res_logits, final.low_res_logits)
    np.testing.assert_array_equal(second.mask, logits_to_mask(final.low_res_logits,
                                                              encoded.geometry))

    assert session.undo() is first and session.box.corners == BOX
    assert session.undo() is None and session.box is None


def test_clicks_then_a_box(engine, encoded):
    """A box set after clicks replaces nothing: clicks stay, and the box joins them."""
    session = ClickSession(engine, encoded, refine_at=None)
    session.click(150, 110)
    result = session.set_box(*BOX)
    assert session.clicks[0].xy == (150, 110) and session.box.corners == BOX
    assert not result.decoded_on_refined


@pytest.mark.parametrize("box", [(10, 10, 5, 50), (0, 0, 321, 100), (-1, 0, 10, 10),
                                 (0, 20, 10, 20)])
def test_bad_boxes_are_rejected(engine, encoded, box):
    session = ClickSession(engine, encoded)
    with pytest.raises(ValueError, match="must satisfy 0 <= x0 < x1 <= 320"):
        session.set_box(*box)
    assert session.steps == 0


def test_segment_with_a_box(tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "mask.png"
    result = runner.invoke(app, ["segment", IMAGE, "--model", str(tiny_model_dir), "--box",
                                 "40,30,230,200", "--clicks", "150,110,+", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "box 40,30,230,200" in result.output and "ran" in result.output
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (240, 320)
    result = runner.invoke(app, ["segment", IMAGE, "--model", str(tiny_model_dir), "--box",
                                 "40,30,230"])
    assert result.exit_code == 2 and "is not X0,Y0,X1,Y1" in result.output
    result = runner.invoke(app, ["segment", IMAGE, "--model", str(tiny_model_dir)])
    assert result.exit_code == 2 and "give --clicks, --box or both" in result.output
