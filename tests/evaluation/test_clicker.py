"""Click simulator: golden clicker cases, session replays, and the rules of spec §6.4."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from focsam_onnx.engine.prompts import Click
from focsam_onnx.evaluation.clicker import error_distance_maps, next_click, propose_click


def _clicks_from_json(points_yx_mode: list | None) -> list[Click]:
    return [Click(x, y, mode == "positive") for y, x, mode in points_yx_mode or []]


@pytest.fixture(scope="module")
def clicker_cases(golden):
    return json.loads((golden / "clicker_cases.json").read_text())


@pytest.fixture(scope="module", params=[1, 2], ids=["session_1", "session_2"])
def session(request, golden, load_golden):
    record = json.loads((golden / f"session_{request.param}.json").read_text())
    return record, load_golden(f"session_{request.param}")


def _session_clicks(record: dict) -> list[Click]:
    return [Click(c["x"], c["y"], c["label"] == 1) for c in record["per_click"]]


def test_click_order_helpers():
    click = Click(x=7, y=3, positive=False)
    assert click.xy == (7, 3)
    assert click.label == 0
    assert Click(0, 0, True).label == 1


def test_clicker_cases_reproduced_in_order(clicker_cases, load_golden):
    arrays = load_golden("clicker_cases")
    rng = random.Random(clicker_cases["random_seed"])
    for case in clicker_cases["cases"]:
        i = case["case"]
        pred, gt = arrays[f"case{i}_pred"], arrays[f"case{i}_gt"]
        clicks = _clicks_from_json(case["points_yx_mode"])

        fneg, fpos = error_distance_maps(pred, gt, clicks)
        assert fneg.dtype == np.float32 and fpos.dtype == np.float32
        np.testing.assert_array_equal(fneg, arrays[f"case{i}_fneg_dist"], err_msg=case["name"])
        np.testing.assert_array_equal(fpos, arrays[f"case{i}_fpos_dist"], err_msg=case["name"])

        proposal = propose_click(pred, gt, clicks)
        assert float(proposal.fneg_max) == case["fneg_max"], case["name"]
        assert float(proposal.fpos_max) == case["fpos_max"], case["name"]
        assert proposal.n_candidates == case["n_candidates"], case["name"]
        assert proposal.candidates_yx.tolist() == case["candidates_yx"], case["name"]

        state = rng.getstate()
        click = next_click(pred, gt, clicks, rng)
        y, x, mode = case["result_yx_mode"]
        if mode is None:
            assert click is None, case["name"]
            assert rng.getstate() == state, "no click must not consume a random draw"
            continue
        assert click == Click(x, y, mode == "positive"), case["name"]
        assert case["candidates_yx"][case["chosen_index"]] == [y, x]


def test_session_choice_stream_is_one_draw_per_click(session):
    record, _ = session
    rng = random.Random(record["seed"])
    drawn = [rng.choice(range(c["n_candidates"])) for c in record["per_click"]]
    assert drawn == [c["chosen_candidate_index"] for c in record["per_click"]]


def test_session_clicks_from_stored_masks(session):
    """Clicks 1, 2, 3 and 6 follow from masks the session stores (zeros, after click 1, 2, 5)."""
    record, arrays = session
    gt = arrays["gt_mask"]
    clicks = _session_clicks(record)
    np.testing.assert_array_equal(
        arrays["clicks_yx_label"], [[c.y, c.x, c.label] for c in clicks]
    )
    preds = {
        1: np.zeros_like(gt),
        2: arrays["mask_click01"],
        3: arrays["mask_click02"],
        6: arrays["mask_click05"],
    }
    for number, pred in preds.items():
        step = record["per_click"][number - 1]
        proposal = propose_click(pred, gt, clicks[: number - 1])
        assert float(proposal.fneg_max) == step["fneg_max_dist"], number
        assert float(proposal.fpos_max) == step["fpos_max_dist"], number
        assert proposal.positive == (step["label"] == 1), number
        assert proposal.n_candidates == step["n_candidates"], number
        if step["candidates_yx"] is not None:
            assert proposal.candidates_yx.tolist() == step["candidates_yx"], number
        chosen = proposal.candidates_yx[step["chosen_candidate_index"]].tolist()
        assert chosen == [step["y"], step["x"]], number


def test_first_click_is_farthest_from_border_and_positive():
    gt = np.zeros((9, 11), np.uint8)
    gt[1:8, 2:9] = 1  # 7x7 square: centre (4, 5) is 4 px from the nearest background
    click = next_click(np.zeros_like(gt), gt, [], random.Random(0))
    assert click == Click(5, 4, True)


def test_region_on_image_border_counts_outside_as_background():
    gt = np.zeros((6, 6), np.uint8)
    gt[:, :3] = 1  # touches top, bottom and left borders
    fneg, fpos = error_distance_maps(np.zeros_like(gt), gt, [])
    assert fneg[0, 0] == 1.0 and fneg[2, 2] == 1.0 and fneg[2, 1] == 2.0
    assert fneg[:, 3:].max() == 0.0 and fpos.max() == 0.0


def test_clicked_pixel_is_removed_from_the_error_region():
    gt = np.zeros((7, 7), np.uint8)
    gt[1:6, 1:6] = 1
    fneg, _ = error_distance_maps(np.zeros_like(gt), gt, [Click(3, 3, True)])
    assert fneg[3, 3] == 0.0
    assert fneg[3, 2] == 1.0  # its neighbour now borders a background seed


def test_only_value_one_is_foreground():
    gt = np.full((5, 5), 255, np.uint8)
    gt[2, 2] = 1
    pred = np.full((5, 5), 2, np.uint8)  # a value other than 1 is background too
    fneg, fpos = error_distance_maps(pred, gt, [])
    assert fneg.sum() == 1.0 and fpos.max() == 0.0


def test_tie_gives_negative_click():
    gt = np.zeros((5, 9), np.uint8)
    gt[1:4, 1:4] = 1
    pred = np.zeros_like(gt)
    pred[1:4, 5:8] = 1  # FP square mirrors the FN square: equal maxima
    click = next_click(pred, gt, [], random.Random(0))
    assert click == Click(6, 2, False)


def test_perfect_prediction_gives_none_without_a_draw():
    gt = np.zeros((4, 4), np.uint8)
    gt[1:3, 1:3] = 1
    rng = random.Random(5)
    state = rng.getstate()
    assert next_click(gt.copy(), gt, [], rng) is None
    assert rng.getstate() == state


def test_single_candidate_still_consumes_one_draw():
    gt = np.zeros((5, 5), np.uint8)
    gt[1:4, 1:4] = 1
    rng, reference = random.Random(7), random.Random(7)
    assert next_click(np.zeros_like(gt), gt, [], rng) == Click(2, 2, True)
    reference.choice(range(1))
    assert rng.random() == reference.random()


def test_candidates_are_row_major_and_choice_indexes_them():
    gt = np.zeros((4, 8), np.uint8)
    gt[1:3, 1:3] = 1
    gt[1:3, 5:7] = 1  # two 2x2 squares: 8 tied pixels at distance 1
    proposal = propose_click(np.zeros_like(gt), gt, [])
    expected = [[1, 1], [1, 2], [1, 5], [1, 6], [2, 1], [2, 2], [2, 5], [2, 6]]
    assert proposal.candidates_yx.tolist() == expected
    index = random.Random(3).choice(range(8))
    y, x = expected[index]
    assert next_click(np.zeros_like(gt), gt, [], random.Random(3)) == Click(x, y, True)


@pytest.mark.parametrize(
    ("pred_shape", "clicks"),
    [((5, 6), []), ((5, 5), [Click(0, 5, True)]), ((5, 5), [Click(-1, 0, False)])],
)
def test_bad_inputs_raise_value_error(pred_shape, clicks):
    with pytest.raises(ValueError):
        error_distance_maps(np.zeros(pred_shape, np.uint8), np.zeros((5, 5), np.uint8), clicks)


def test_sfc_inner_k_between_zero_and_one_is_rejected():
    gt = np.ones((3, 3), np.uint8)
    with pytest.raises(ValueError, match="0.5"):
        propose_click(np.zeros_like(gt), gt, [], sfc_inner_k=0.5)
