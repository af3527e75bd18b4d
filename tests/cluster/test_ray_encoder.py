"""`embed --ray` and `evaluate --ray` on a real local Ray instance: same bytes, same metrics."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.cluster.ray_encoder import EncoderPool
from focsam_onnx.engine.embed import embed_images
from focsam_onnx.engine.loaded_model import read_manifest
from focsam_onnx.evaluation.datasets import find_images

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A `folder` dataset of four images with a rectangle object each."""
    root = tmp_path_factory.mktemp("ray_dataset")
    rng = np.random.default_rng(3)
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    for i in range(4):
        image = rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)
        mask = np.zeros(image.shape[:2], np.uint8)
        mask[8:30, 10 + i:44] = 255
        cv2.imwrite(str(root / "images" / f"s{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), mask)
    return root


@pytest.fixture(scope="module")
def reference_cache(tiny_model_dir, dataset, tmp_path_factory) -> Path:
    """The images embedded by a single-process `embed`."""
    cache = tmp_path_factory.mktemp("single_process_cache")
    result = runner.invoke(app, ["embed", str(dataset / "images"), "--model",
                                 str(tiny_model_dir), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return cache


def test_embed_on_ray_writes_the_single_process_bytes(ray_local, tiny_model_dir, dataset,
                                                      reference_cache, tmp_path, cache_bytes):
    result = runner.invoke(app, ["embed", str(dataset / "images"), "--model",
                                 str(tiny_model_dir), "--cache-dir", str(tmp_path),
                                 "--ray", "local", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 encoded, 0 already cached, 0 failed, of 4 images" in result.output
    assert len(cache_bytes(reference_cache)) == 8
    assert cache_bytes(tmp_path) == cache_bytes(reference_cache)


def test_evaluate_on_ray_gives_the_single_process_metrics(ray_local, tiny_model_dir, dataset,
                                                          tmp_path):
    base = ["evaluate", "--model", str(tiny_model_dir), "--dataset", "folder",
            "--data-root", str(dataset), "--limit", "3"]
    single = runner.invoke(app, [*base, "--out", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    on_ray = runner.invoke(app, [*base, "--out", str(tmp_path / "ray"), "--ray", "local"])
    assert on_ray.exit_code == 0, on_ray.output
    assert "3 encoded" in on_ray.output  # --limit 3: only those images
    assert len(list((tmp_path / "ray" / "embeddings").glob("*.json"))) == 3
    for name in ("metrics.json", "per_sample.json"):
        assert (json.loads((tmp_path / "ray" / name).read_text())
                == json.loads((tmp_path / "single" / name).read_text()))


def test_a_killed_worker_is_restarted_and_every_image_cached_once(
        ray_local, tiny_model_dir, dataset, reference_cache, tmp_path, cache_bytes,
        counting_cache):
    model_id = read_manifest(tiny_model_dir).model_id
    pool = EncoderPool(ray_local, tiny_model_dir, model_id, workers=2)
    try:
        first_pids = pool.pids()
        killed = []

        def kill_one_midway(report) -> None:
            if report.encoded == 1 and not killed:  # three images still to go, some in flight
                os.kill(first_pids[0], signal.SIGKILL)
                killed.append(first_pids[0])

        cache = counting_cache(cache_dir=tmp_path)
        paths = find_images([dataset / "images"])
        report = embed_images(paths, cache, model_id, pool, kill_one_midway)
        assert killed and pool.pids()[0] != first_pids[0]  # Ray restarted that worker
    finally:
        pool.close()
    assert report.encoded == 4 and not report.failures
    assert sorted(cache.writes) == sorted(set(cache.writes)) and len(cache.writes) == 4
    assert cache_bytes(tmp_path) == cache_bytes(reference_cache)


def test_readme_embed_commands_run(ray_local, tiny_model_dir, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text().split("## Encode many images\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "tiny").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for argv in commands:
        assert argv[0] == ".venv/bin/focsam-onnx", argv
        result = runner.invoke(app, argv[1:])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    images = len(find_images([tmp_path / "examples"]))
    assert f"{images} encoded, 0 already cached" in outputs[0]
    assert f"0 encoded, {images} already cached" in outputs[1]


def test_without_ray_the_error_names_the_extra(tiny_model_dir, dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray has
    result = runner.invoke(app, ["embed", str(dataset / "images"), "--model",
                                 str(tiny_model_dir), "--cache-dir", str(tmp_path),
                                 "--ray", "local"])
    assert result.exit_code == 2
    assert "--ray needs Ray, which is not installed: pip install 'focsam-onnx[ray]'" in (
        result.output)
