"""The team load generator runs end to end on a tiny model: no errors and no lost saves."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from focsam_onnx.bench.annotators import lost_saves, main  # noqa: E402


def test_two_annotators_lose_nothing(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "team.json"
    assert main(["--model", str(tiny_model_dir), "--annotators", "2", "--duration", "4",
                 "--think", "0.1", "--images-per-annotator", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["annotators"] == 2 and row["images"] >= 2
    assert row["errors"] == 0, row["error_samples"]
    assert row["lost_saves"] == 0, row["lost_samples"]
    assert row["prompts"] >= 2 and row["click_ms"]["n"] + row["box_ms"]["n"] == row["prompts"]
    assert row["first_mask_ms"]["n"] == row["images"]
    assert row["encodes"] >= row["images"]  # each image encoded once (some ahead of time)
    assert "| annotators |" in capsys.readouterr().out


def test_a_prompt_missing_from_the_records_is_a_lost_save():
    click = {"x": 3, "y": 4, "positive": True}
    box = {"box": [1.0, 2.0, 30.0, 40.0]}
    acked = {("a.png", 1): [box, click], ("a.png", 2): [click]}
    assert lost_saves(acked, {("a.png", 1): [box, click], ("a.png", 2): [click]}) == []
    assert len(lost_saves(acked, {("a.png", 1): [box]})) == 2  # a click, and a whole object
    assert len(lost_saves(acked, {("a.png", 1): [click, box], ("a.png", 2): [click]})) == 2
