"""serve's Ray encoder (`cluster/serve_encoder.py`) on a real local Ray: opened images first,
and none lost when a worker is killed (SIGKILL)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from focsam_onnx.cli import app
from focsam_onnx.cluster.serve_encoder import PoolEncoder
from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.image_io import load_image
from focsam_onnx.engine.loaded_model import read_manifest

runner = CliRunner()


def test_a_killed_worker_loses_no_opened_image(ray_local, tiny_model_dir, six_images, tmp_path,
                                              single_process_cache, cache_bytes,
                                              counting_cache):
    images = six_images
    reference = single_process_cache(images)
    model_id = read_manifest(tiny_model_dir).model_id
    cache = counting_cache(cache_dir=tmp_path / "cache")
    lock = threading.Lock()
    killed: list[int] = []

    def store(image_hash, embeddings) -> None:
        with lock:
            cache.put(image_hash, model_id, "fp32", embeddings)

    def has(image_hash) -> bool:
        with lock:
            return cache.contains(image_hash, model_id, "fp32")

    def kill_after_the_first(label, seconds) -> None:
        if not killed:  # five images to go: worker 0 has one or two of them in flight
            killed.append(first_pids[0])
            os.kill(first_pids[0], signal.SIGKILL)

    encoder = PoolEncoder("local", tiny_model_dir, model_id, store, has, workers=2,
                          on_encoded=kill_after_the_first)
    encoder.start()
    first_pids = encoder.pool.pids()  # asked now: later, a worker answers after its images
    try:
        paths = sorted(images.iterdir())
        errors: list[BaseException] = []

        def open_one(path: Path) -> None:
            try:
                encoder.encode(load_image(path), path.name, path)
            except BaseException as err:
                errors.append(err)

        people = [threading.Thread(target=open_one, args=(p,)) for p in paths]
        for person in people:
            person.start()
        for person in people:
            person.join(timeout=300)
        assert killed and encoder.pool.pids()[0] != killed[0]  # Ray restarted that worker
        assert not errors, errors
        assert encoder.snapshot()["encoded"] == 6
    finally:
        encoder.close()
    assert sorted(cache.writes) == sorted(set(cache.writes)) and len(cache.writes) == 6
    assert cache_bytes(tmp_path / "cache") == reference


def test_opened_images_go_before_pre_encodes(ray_local, tiny_model_dir, six_images, tmp_path):
    images = six_images
    model_id = read_manifest(tiny_model_dir).model_id
    cache = EmbeddingCache(cache_dir=tmp_path / "cache")
    order: list[str] = []
    encoder = PoolEncoder("local", tiny_model_dir, model_id,
                          lambda h, e: cache.put(h, model_id, "fp32", e),
                          lambda h: cache.contains(h, model_id, "fp32"), workers=1,
                          on_encoded=lambda label, seconds: order.append(label))
    encoder.start()
    try:
        paths = sorted(images.iterdir())
        encoder.prefetch(paths[:5])
        opened = threading.Thread(target=encoder.encode,
                                  args=(load_image(paths[5]), paths[5].name, paths[5]))
        opened.start()
        positions = set()
        while opened.is_alive():  # where the page would show it: waiting 1st, then encoding
            positions.add(encoder.position(paths[5].name))
            time.sleep(0.002)
        deadline = time.monotonic() + 300
        while len(order) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        encoder.close()
    # One worker: the pre-encode it was running goes first (two or three if this thread
    # stalled); in the order asked, the opened image would come last.
    assert order.index(paths[5].name) <= 3 and sorted(order) == sorted(p.name for p in paths)
    assert positions - {None} and positions <= {None, 0, 1}


def test_serve_without_ray_names_the_extra(tiny_model_dir, six_images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = runner.invoke(app, ["serve", "--model", str(tiny_model_dir), "--images",
                                 str(six_images), "--out", str(tmp_path / "labels"), "--ray",
                                 "local"])
    assert result.exit_code == 2
    assert "--ray needs Ray, which is not installed: pip install 'focsam-onnx[ray]'" in (
        result.output)
