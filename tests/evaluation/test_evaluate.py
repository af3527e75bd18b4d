"""The evaluation harness around the per-object loop: resuming, modes, skipped objects."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import ResumeError, RunSettings, evaluate


@pytest.fixture(scope="module")
def dataset_root(load_golden, tmp_path_factory):
    """A `folder` dataset: the two golden session images, plus one with an empty object."""
    root = tmp_path_factory.mktemp("folder_dataset")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for name in ("session_1", "session_2"):
        data = load_golden(name)
        cv2.imwrite(str(root / "images" / f"{name}.png"), data["image_rgb"][..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{name}.png"), data["gt_mask"] * 255)
    cv2.imwrite(str(root / "images" / "session_3_empty.png"), np.full((40, 60, 3), 90, np.uint8))
    cv2.imwrite(str(root / "masks" / "session_3_empty.png"), np.zeros((40, 60), np.uint8))
    return root


@pytest.fixture(scope="module")
def engine(golden_model_dir):
    return FocSAMEngine.open(golden_model_dir, threads=2)


def settings(engine, mode="focsam", seed=7):
    return RunSettings("folder", mode, seed, "upstream", engine.model.model_id)


class Interrupted(BaseException):
    """Stands for Ctrl-C."""


def interrupt_at(sample: int):
    def on_progress(done: int, total: int) -> None:
        if done == sample:
            raise Interrupted

    return on_progress


def test_interrupted_run_resumes_to_the_same_result(engine, dataset_root, tmp_path):
    samples = open_dataset("folder", dataset_root)
    full = evaluate(engine, samples, tmp_path / "full", settings(engine))
    with pytest.raises(Interrupted):  # Ctrl-C while the second sample starts
        evaluate(engine, samples, tmp_path / "resumed", settings(engine),
                 on_progress=interrupt_at(1))
    runs = []
    resumed = evaluate(engine, samples, tmp_path / "resumed", settings(engine),
                       on_progress=lambda done, total: runs.append(done))
    assert runs[0] == 1  # the first sample was not evaluated again
    assert resumed == full and full["samples"] == 2 and full["skipped"] == 1
    per_sample = [json.loads((tmp_path / d / "per_sample.json").read_text())
                  for d in ("full", "resumed")]
    assert per_sample[0] == per_sample[1]
    assert [s["id"] for s in per_sample[0]] == ["session_1", "session_2"]


def test_other_settings_are_refused_unless_restarted(engine, dataset_root, tmp_path):
    samples = open_dataset("folder", dataset_root)
    evaluate(engine, samples, tmp_path, settings(engine, seed=1), limit=1)
    with pytest.raises(ResumeError, match="seed 1 -> 2"):
        evaluate(engine, samples, tmp_path, settings(engine, seed=2), limit=1)
    metrics = evaluate(engine, samples, tmp_path, settings(engine, seed=2), limit=2, restart=True)
    assert metrics["samples"] == 2
    fresh = evaluate(engine, samples, tmp_path / "fresh", settings(engine, seed=2), limit=2)
    assert metrics == fresh


def test_both_modes_share_the_folder_and_the_plot(engine, dataset_root, tmp_path):
    samples = open_dataset("folder", dataset_root)
    focsam = evaluate(engine, samples, tmp_path, settings(engine), limit=1)
    sam = evaluate(engine, samples, tmp_path, settings(engine, mode="sam"), limit=1)
    assert json.loads((tmp_path / "metrics.json").read_text())["mode"] == "focsam"
    saved = json.loads((tmp_path / "metrics.sam.json").read_text())
    assert saved["mode"] == "sam" and saved["NoC@90"] == sam["NoC@90"]
    assert len(saved["mIoU_curve"]) == 20 and saved["mIoU@20"] == saved["mIoU_curve"][-1]
    assert focsam["mIoU@1"] == sam["mIoU@1"]  # the refiner first acts at the 2nd click
    assert "NoC@90" in (tmp_path / "metrics.md").read_text()
    plot = cv2.imread(str(tmp_path / "miou_curve.png"))
    assert plot is not None and plot.shape[0] > 100
