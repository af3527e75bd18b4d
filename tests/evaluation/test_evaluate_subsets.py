"""`evaluate` on a multi-part benchmark (HQSeg-44K) through the CLI: per-subset metrics."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.evaluation.datasets import HQSEG44K_VAL


def _write(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_evaluate_hqseg44k_writes_metrics_per_subset(tiny_model_dir, tmp_path):
    rng = np.random.default_rng(0)
    counts = {"DIS5K-VD": 2, "ThinObject5K-TE": 1, "COIFT": 1, "HRSOD": 1}
    for subset, image_dir, mask_dir in HQSEG44K_VAL:
        for n in range(counts[subset]):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            mask = np.zeros((48, 64, 3), np.uint8)  # 3-channel: any channel > 0 is foreground
            mask[10:30, 8 + 10 * n:40, n % 3] = 255
            if subset == "HRSOD":
                mask[:] = 0  # an empty object: skipped and reported in its subset
            _write(tmp_path / "data" / image_dir / f"im{n}.jpg", image)
            _write(tmp_path / "data" / mask_dir / f"im{n}.png", mask)
    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_model_dir), "--dataset",
                                      "hqseg44k", "--data-root", str(tmp_path / "data"),
                                      "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output

    metrics = json.loads((out / "metrics.json").read_text())
    per_sample = json.loads((out / "per_sample.json").read_text())
    assert [s["id"] for s in per_sample] == ["DIS5K-VD/im0", "DIS5K-VD/im1",
                                             "ThinObject5K-TE/im0", "COIFT/im0"]
    assert "HQSeg-44K" in metrics["protocol"] and "20 clicks" in metrics["protocol"]
    subsets = metrics["subsets"]
    assert list(subsets) == ["DIS5K-VD", "ThinObject5K-TE", "COIFT", "HRSOD"]
    assert [subsets[s]["samples"] for s in subsets] == [2, 1, 1, 0]
    assert [subsets[s]["skipped"] for s in subsets] == [0, 0, 0, 1]
    assert metrics["samples"] == 4 and metrics["skipped"] == 1
    ious = {s["id"]: s["ious"] for s in per_sample}
    dis = [ious["DIS5K-VD/im0"], ious["DIS5K-VD/im1"]]
    exact = {"abs": 1e-12}
    assert subsets["DIS5K-VD"]["5-mIoU"] == pytest.approx(np.mean(np.mean(dis, 0)[:5]), **exact)
    assert subsets["DIS5K-VD"]["mIoU@5"] == pytest.approx(np.mean([r[4] for r in dis]), **exact)
    assert subsets["COIFT"]["5-mIoU"] == pytest.approx(np.mean(ious["COIFT/im0"][:5]), **exact)
    assert metrics["5-mIoU"] == pytest.approx(np.mean([np.mean(r[:5]) for r in ious.values()]),
                                              **exact)

    table = (out / "metrics.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| subset | NoC@85")
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == ["DIS5K-VD", "ThinObject5K-TE",
                                                         "COIFT", "HRSOD", "overall"]
    assert f"{subsets['COIFT']['5-mIoU']:.4f}" in rows[3]
    assert "FocSAM protocol" in table and "HQSeg-44K" in table
