"""`embed`: many images into the cache, with progress, failures reported, and resumable."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.embed import embed_images, local_encoder
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.image_io import image_content_hash, load_image
from focsam_onnx.evaluation.datasets import dataset_images, find_images, open_dataset

runner = CliRunner()


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` small random PNGs of different sizes (so each has its own hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"img{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def cached(cache_dir: Path, model_id: str, paths: list[Path]) -> list[Path]:
    """The images of `paths` that have a valid entry in `cache_dir`."""
    cache = EmbeddingCache(cache_dir=cache_dir)
    return [p for p in paths if cache.contains(image_content_hash(load_image(p)), model_id, "fp32")]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return FocSAMEngine.open(tiny_model_dir, threads=2)


def test_embed_reports_progress_skips_a_corrupt_image_and_fails_the_exit_code(
        tiny_model_dir, engine, tmp_path):
    paths = write_images(tmp_path / "images", 3)
    corrupt = tmp_path / "images" / "sub" / "broken.png"
    corrupt.parent.mkdir()
    corrupt.write_bytes(paths[0].read_bytes()[:60])  # a truncated PNG
    argv = ["embed", str(tmp_path / "images"), "--model", str(tiny_model_dir),
            "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    assert "4/4" in result.output and "img/min" in result.output
    assert "3 encoded, 0 already cached, 1 failed, of 4 images" in result.output
    assert re.search(rf"failed: cannot decode image .*: {re.escape(str(corrupt))}\n",
                     result.output), result.output
    assert cached(tmp_path / "cache", engine.model.model_id, paths) == paths
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3  # nothing for the corrupt one

    corrupt.unlink()
    again = runner.invoke(app, argv)
    assert again.exit_code == 0, again.output
    assert "0 encoded, 3 already cached, 0 failed, of 3 images" in again.output


def test_a_killed_run_resumes_with_only_the_rest(tiny_model_dir, engine, tmp_path):
    paths = write_images(tmp_path / "images", 8, seed=1)
    cache_dir = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, "-m", "focsam_onnx.cli", "embed", str(tmp_path / "images"),
         "--model", str(tiny_model_dir), "--cache-dir", str(cache_dir), "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while len(list(cache_dir.glob("*.json"))) < 2 and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    done = cached(cache_dir, engine.model.model_id, paths)
    assert 2 <= len(done) < len(paths), "the run was not interrupted midway"
    assert done == paths[:len(done)]  # in order: every entry there is whole

    runs = engine.encoder_runs
    report = embed_images(paths, EmbeddingCache(cache_dir=cache_dir), engine.model.model_id,
                          local_encoder(engine))
    assert engine.encoder_runs - runs == len(paths) - len(done) == report.encoded
    assert report.cached == len(done) and not report.failures
    assert cached(cache_dir, engine.model.model_id, paths) == paths


def test_evaluate_reads_the_embeddings_embed_wrote(tiny_model_dir, tmp_path):
    root = tmp_path / "dataset"
    images = write_images(root / "images", 2, seed=2)
    (root / "masks").mkdir()
    for path in images:
        mask = np.zeros(cv2.imread(str(path)).shape[:2], np.uint8)
        mask[10:30, 12:40] = 255
        cv2.imwrite(str(root / "masks" / path.name), mask)
    samples = open_dataset("folder", root)
    assert dataset_images(samples) == images
    embedded = runner.invoke(app, ["embed", "--dataset", "folder", "--data-root", str(root),
                                   "--model", str(tiny_model_dir),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert embedded.exit_code == 0, embedded.output

    from focsam_onnx.evaluation.evaluate import RunSettings, evaluate

    engine = FocSAMEngine.open(tiny_model_dir, threads=2, cache_dir=tmp_path / "cache")
    settings = RunSettings("folder", "focsam", 42, "upstream", engine.model.model_id)
    metrics = evaluate(engine, samples, tmp_path / "results", settings)
    assert metrics["samples"] == 2 and engine.encoder_runs == 0


def test_find_images_walks_folders_keeps_order_and_refuses_missing_paths(tmp_path):
    paths = write_images(tmp_path / "a", 2)
    nested = write_images(tmp_path / "a" / "deeper", 1)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert find_images([paths[1], tmp_path / "a"]) == [paths[1], *nested, paths[0]]  # sorted
    with pytest.raises(ValueError, match="no such file or folder"):
        find_images([tmp_path / "missing"])


def test_embed_refuses_bad_arguments(tiny_model_dir, tmp_path):
    base = ["embed", "--model", str(tiny_model_dir), "--cache-dir", str(tmp_path / "cache")]
    nothing = runner.invoke(app, base)
    assert nothing.exit_code == 2 and "nothing to encode" in nothing.output
    half = runner.invoke(app, [*base, "--dataset", "folder"])
    assert half.exit_code == 2 and "--dataset and --data-root go together" in half.output
