"""Metrics: upstream NoC / IoU against golden values, and hand-computed summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from focsam_onnx.evaluation.metrics import binary_iou, markdown_table, noc, summarize

SUMMARY_KEYS = [
    "NoC@85", "NoC@90", "NoC@95",
    "mIoU@1", "mIoU@2", "mIoU@3", "mIoU@4", "mIoU@5", "mIoU@10", "mIoU@15", "mIoU@20",
    "NoF@85", "NoF@90", "NoF@95", "5-mIoU", "samples",
]


def test_noc_examples_match_upstream(golden):
    examples = json.loads((golden / "clicker_cases.json").read_text())["noc_examples"]
    for example in examples:
        assert noc(example["ious"], 0.85) == example["noc85"]
        assert noc(example["ious"], 0.90) == example["noc90"]


@pytest.mark.parametrize("k", [1, 2])
def test_session_noc_and_iou(golden, load_golden, k):
    record = json.loads((golden / f"session_{k}.json").read_text())
    arrays = load_golden(f"session_{k}")
    ious = [c["iou"] for c in record["per_click"]]
    assert noc(ious, 0.85) == record["noc85"]
    assert noc(ious, 0.90) == record["noc90"]
    np.testing.assert_array_equal(arrays["ious"], ious)
    for number in (1, 2, 5, 20):
        iou = binary_iou(arrays[f"mask_click{number:02d}"], arrays["gt_mask"])
        assert iou == ious[number - 1], number  # same integer counts, same double division


def test_binary_iou_hand_cases():
    gt = np.array([[1, 1, 0, 255]], np.uint8)  # 255 (void band) is background
    assert binary_iou(np.array([[1, 0, 1, 1]], np.uint8), gt) == 1 / 4
    assert binary_iou(np.array([[1, 1, 0, 0]], np.uint8), gt) == 1.0
    assert binary_iou(np.array([[0, 0, 1, 1]], np.uint8), gt) == 0.0
    assert binary_iou(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.uint8)) == 0.0
    assert binary_iou(np.array([[True, False, False, False]]), gt) == 0.5


def test_binary_iou_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        binary_iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_noc_generalises_to_any_click_count():
    assert noc([0.1, 0.2, 0.3], 0.9) == 3
    assert noc([0.1, 0.95, 0.3], 0.9) == 2
    assert noc([0.9], 0.95) == 1
    with pytest.raises(ValueError):
        noc([], 0.85)
    with pytest.raises(ValueError, match="1.5"):
        noc([0.5], 1.5)


def _curve(first: list[float], rest: float) -> list[float]:
    return first + [rest] * (20 - len(first))


def test_summarize_hand_computed():
    a = _curve([0.5, 0.86, 0.91, 0.96], 0.97)  # NoC 2 / 3 / 4
    b = _curve([0.2, 0.4, 0.6, 0.8, 0.84], 0.84)  # never reaches 0.85: NoC 20, NoF@85 and @90
    c = _curve([0.88], 0.88)  # NoC@85 = 1, never 0.90: NoF@90 only
    metrics = summarize([a, b, c])
    assert list(metrics) == SUMMARY_KEYS
    assert metrics["NoC@85"] == pytest.approx((2 + 20 + 1) / 3, abs=1e-12)
    assert metrics["NoC@90"] == pytest.approx((3 + 20 + 20) / 3, abs=1e-12)
    assert metrics["NoC@95"] == pytest.approx((4 + 20 + 20) / 3, abs=1e-12)
    assert metrics["mIoU@1"] == pytest.approx((0.5 + 0.2 + 0.88) / 3, abs=1e-12)
    assert metrics["mIoU@4"] == pytest.approx((0.96 + 0.8 + 0.88) / 3, abs=1e-12)
    assert metrics["mIoU@20"] == pytest.approx((0.97 + 0.84 + 0.88) / 3, abs=1e-12)
    assert metrics["NoF@85"] == 1
    assert metrics["NoF@90"] == 2
    assert metrics["NoF@95"] == 2  # a reaches 0.96 at click 4
    five = [np.mean(a[:5]), np.mean(b[:5]), np.mean(c[:5])]
    assert metrics["5-mIoU"] == pytest.approx(np.mean(five), abs=1e-12)
    assert metrics["samples"] == 3


def test_summarize_uses_raw_last_iou_for_miou_but_not_for_noc():
    curve = [0.1] * 19 + [0.99]  # reaches every threshold only at click 20
    metrics = summarize([curve])
    assert metrics["NoC@85"] == 20.0
    assert metrics["mIoU@20"] == 0.99
    assert metrics["NoF@85"] == 0  # the real 20th IoU counts for NoF


def test_summarize_rejects_ragged_or_empty_input():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError, match="same"):
        summarize([[0.5] * 20, [0.5] * 19])


def test_markdown_table():
    metrics = {"NoC@85": 1.5, "mIoU@1": 0.123456, "NoF@85": 3, "samples": 2}
    table = markdown_table(metrics, "GrabCut")
    lines = table.splitlines()
    assert lines[0] == "### GrabCut"
    assert lines[2] == "| NoC@85 | mIoU@1 | NoF@85 | samples |"
    assert lines[4] == "| 1.50 | 0.1235 | 3 | 2 |"
    assert "NoF@85: extensions" in table


def test_markdown_table_with_subsets_and_note():
    metrics = {"NoC@90": 3.25, "5-mIoU": 0.5, "samples": 3, "skipped": 1,
               "subsets": {"DIS5K-VD": {"NoC@90": 2.5, "5-mIoU": 0.75, "samples": 2,
                                        "skipped": 0},
                           "COIFT": {"samples": 0, "skipped": 1}}}
    lines = markdown_table(metrics, "hqseg44k", "FocSAM protocol").splitlines()
    assert lines[:3] == ["### hqseg44k", "", "FocSAM protocol"]
    assert lines[4] == "| subset | NoC@90 | 5-mIoU | samples | skipped |"
    assert lines[5] == "|:---|---:|---:|---:|---:|"
    assert lines[6:9] == ["| DIS5K-VD | 2.50 | 0.7500 | 2 | 0 |", "| COIFT | – | – | 0 | 1 |",
                          "| overall | 3.25 | 0.5000 | 3 | 1 |"]
    assert "mIoU after 5 clicks, column mIoU@5" in lines[-1]
