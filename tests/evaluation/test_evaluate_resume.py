"""Resuming an evaluation: only the very same run resumes, and an interrupt anywhere is harmless."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.evaluation import evaluate as evaluation
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import ResumeError, RunSettings, evaluate

CLICKS = 2  # refiner included; a short protocol keeps these tests to seconds
OUTPUTS = ("per_sample.json", "metrics.json", "metrics.md", "miou_curve.png", ".progress.json")


def write_dataset(root: Path, count: int, empty: tuple[int, ...] = ()) -> Path:
    """A `folder` dataset of `count` 48x64 images with a rectangle each (sample k empty if k in
    `empty`); image k's pixels depend only on k, so two roots share their common samples."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        if k not in empty:
            mask[8 + k % 5: 30, 10: 40 + k % 7] = 255
        cv2.imwrite(str(root / "images" / f"s{k:02d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"s{k:02d}.png"), mask)
    return root


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return FocSAMEngine.open(tiny_model_dir, threads=2)


def settings(engine, root: Path, seed: int = 7, **kw) -> RunSettings:
    return RunSettings("folder", kw.pop("mode", "focsam"), seed, kw.pop("seed_mode", "upstream"),
                       engine.model.model_id, data_root=str(root), num_clicks=CLICKS)


def run(engine, root: Path, out: Path, limit: int | None = None, **kw) -> dict:
    restart = kw.pop("restart", False)
    return evaluate(engine, open_dataset("folder", root), out, settings(engine, root, **kw),
                    limit, restart=restart)


def outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def test_a_finished_run_reruns_without_evaluating_again(engine, tmp_path):
    root = write_dataset(tmp_path / "data", 3)
    first = run(engine, root, tmp_path / "out")
    seen = []
    again = evaluate(engine, open_dataset("folder", root), tmp_path / "out",
                     settings(engine, root), on_progress=lambda done, total: seen.append(done))
    assert again == first and seen == [3]  # only the final report: nothing ran


def test_another_data_root_is_refused(engine, tmp_path):
    big, small = write_dataset(tmp_path / "big", 4), write_dataset(tmp_path / "small", 2)
    run(engine, big, tmp_path / "out")
    with pytest.raises(ResumeError, match=r"data_root .*big.* -> .*small") as err:
        run(engine, small, tmp_path / "out")
    assert re.search(r"samples: 4 recorded, 2 now, 2 removed \(e\.g\. 's02'\)", str(err.value))
    assert "--restart" in str(err.value)


def test_another_limit_is_refused_and_restart_gives_a_fresh_run(engine, tmp_path):
    root = write_dataset(tmp_path / "data", 4)
    run(engine, root, tmp_path / "out")
    with pytest.raises(ResumeError, match=r"limit None -> 2"):
        run(engine, root, tmp_path / "out", limit=2)
    restarted = run(engine, root, tmp_path / "out", limit=2, restart=True)
    fresh = run(engine, root, tmp_path / "fresh", limit=2)
    assert restarted == fresh and fresh["samples"] == 2
    assert outputs(tmp_path / "out") == outputs(tmp_path / "fresh")


def test_an_image_added_after_an_interruption_is_refused(engine, tmp_path):
    root = write_dataset(tmp_path / "data", 3)
    run(engine, root, tmp_path / "out", limit=2)
    with pytest.raises(ResumeError, match=r"2 recorded, 4 now, 2 added \(e\.g\. 's02'\)"):
        run(engine, write_dataset(root, 4), tmp_path / "out", limit=4)


def test_changed_content_seed_and_model_are_refused(engine, tmp_path):
    root = write_dataset(tmp_path / "data", 3)
    run(engine, root, tmp_path / "out")
    with pytest.raises(ResumeError, match=r"seed 7 -> 8"):
        run(engine, root, tmp_path / "out", seed=8)
    with pytest.raises(ResumeError, match=r"mode 'upstream' -> 'per-sample'"):
        run(engine, root, tmp_path / "out", seed_mode="per-sample")
    other = RunSettings("folder", "focsam", 7, "upstream", "another-model", data_root=str(root),
                        num_clicks=CLICKS)
    with pytest.raises(ResumeError, match=r"model_id '[0-9a-f]+' -> 'another-model'"):
        evaluate(engine, open_dataset("folder", root), tmp_path / "out", other)
    mask = cv2.imread(str(root / "masks" / "s01.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / "masks" / "s01.png"), 255 - mask)
    with pytest.raises(ResumeError, match=r"1 with other content \(e\.g\. 's01'\)"):
        run(engine, root, tmp_path / "out")


def test_results_of_unknown_origin_are_not_overwritten(engine, tmp_path):
    root = write_dataset(tmp_path / "data", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")
    with pytest.raises(ResumeError, match="without a progress record"):
        run(engine, root, tmp_path / "out")
    assert (tmp_path / "out" / "metrics.json").read_text() == "{}"


class Interrupted(BaseException):
    """Stands for Ctrl-C (not an Exception, so nothing on the way may swallow it)."""


def test_an_interrupt_between_any_two_writes_resumes_to_the_uninterrupted_result(
        engine, tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "data", 3, empty=(1,))
    real_write = evaluation.atomic_write
    writes = []
    monkeypatch.setattr(evaluation, "atomic_write",
                        lambda path, data: (writes.append(path), real_write(path, data)))
    expected_metrics = run(engine, root, tmp_path / "full")
    expected = outputs(tmp_path / "full")
    total = len(writes)
    assert total == 3 + 4  # one progress record per sample, then the four results files

    for allowed in range(total):
        out = tmp_path / f"interrupted_{allowed}"
        count = [0]

        def failing_write(path, data, allowed=allowed, count=count):
            if count[0] == allowed:
                raise Interrupted
            count[0] += 1
            real_write(path, data)

        monkeypatch.setattr(evaluation, "atomic_write", failing_write)
        with pytest.raises(Interrupted):
            run(engine, root, out)
        monkeypatch.setattr(evaluation, "atomic_write", real_write)
        assert run(engine, root, out) == expected_metrics, allowed
        assert outputs(out) == expected, allowed
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
        shutil.rmtree(out)
