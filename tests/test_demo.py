"""The main job on the packaged demo model: `segment` without --model exports it once into the
cache and uses it; `make demo-segment` does the same from a clean clone."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.errors import Unavailable
from focsam_onnx.evaluation.evaluate import MODES, run_object
from focsam_onnx.evaluation.metrics import binary_iou
from focsam_onnx.export.model_cache import export_dir, is_exported
from focsam_onnx.training.heldout import heldout_scene
from focsam_onnx.training.scenes import interior_point
from focsam_onnx.weights.catalog import DEMO, find
from focsam_onnx.weights.packaged import packaged_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
# The example of the README and `make demo-segment`: held-out scene 37, its object 1, one click.
DEMO_EXAMPLE = REPO_ROOT / "examples" / "demo_scene_0037.png"
DEMO_SCENE, DEMO_OBJECT, DEMO_CLICKS = 37, 1, "161,288,+"
# The held-out scenes shipped in examples/: chosen as ones the model segments well (the
# README's model card gives its figures over all 40 held-out scenes); these tests keep them
# segmenting as the README shows.
EXAMPLE_SCENES = (14, 23, 37)
SAYS_DEMO = f"no --model: using the packaged demo model {DEMO} "


def cli_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "FOCSAM_ONNX_CACHE": str(cache), "COLUMNS": "200"}


def run_cli(argv: list[str], cache: Path) -> str:
    """`focsam-onnx ARGV` in a subprocess with its own FOCSAM_ONNX_CACHE; its output (rc 0)."""
    done = subprocess.run([sys.executable, "-m", "focsam_onnx.cli", *argv], env=cli_env(cache),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@dataclass(frozen=True)
class DemoRun:
    cache: Path  # a FOCSAM_ONNX_CACHE in which the demo model is now exported
    output: str  # what the first run printed
    mask: Path  # the mask it wrote


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> DemoRun:
    """`segment` without --model on the example, the first run in an empty cache: it exports
    the packaged demo checkpoint. Skips while this build has no weights/demo_tiny.pth."""
    try:
        packaged_checkpoint(find(DEMO))  # a file that differs from the catalogue fails here
    except Unavailable as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp("demo_run")
    mask = root / "mask.png"
    output = run_cli(["segment", str(DEMO_EXAMPLE), "--clicks", DEMO_CLICKS, "--out", str(mask)],
                     root / "cache")
    return DemoRun(root / "cache", output, mask)


def test_the_examples_are_heldout_scenes_and_the_click_is_inside_the_object():
    shipped = sorted(REPO_ROOT.glob("examples/demo_scene_*.png"))
    assert [int(path.stem.rsplit("_", 1)[1]) for path in shipped] == list(EXAMPLE_SCENES)
    for path, index in zip(shipped, EXAMPLE_SCENES):
        np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1],
                                      heldout_scene(index).image)
    x, y, _ = DEMO_CLICKS.split(",")
    assert DEMO_SCENE in EXAMPLE_SCENES
    assert heldout_scene(DEMO_SCENE).masks[DEMO_OBJECT][int(y), int(x)]


def test_the_first_run_exports_the_demo_model_into_the_cache(demo_run):
    entry = find(DEMO)
    out = export_dir(entry.filename, entry.sha256, demo_run.cache)
    assert out.name == f"demo_tiny-{entry.sha256[:12]}" and is_exported(out)
    assert demo_run.output.count(SAYS_DEMO) == 1
    assert "not FocSAM's quality" in demo_run.output and "--weights NAME" in demo_run.output
    assert f"{DEMO}: exporting " in demo_run.output and str(out) in demo_run.output


def test_a_second_run_reuses_the_cached_export(demo_run, tmp_path):
    output = run_cli(["segment", str(DEMO_EXAMPLE), "--clicks", DEMO_CLICKS, "--out",
                      str(tmp_path / "mask.png")], demo_run.cache)
    assert SAYS_DEMO in output and f"{DEMO}: the export made on first use" in output
    assert "exporting" not in output
    again = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(again, cv2.imread(str(demo_run.mask), cv2.IMREAD_UNCHANGED))


def test_the_example_click_selects_the_scenes_object(demo_run):
    mask = cv2.imread(str(demo_run.mask), cv2.IMREAD_UNCHANGED) > 0
    truth = heldout_scene(DEMO_SCENE).masks[DEMO_OBJECT]
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.85, f"IoU {iou:.3f} with the scene's object {DEMO_OBJECT}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_without_model_serves_the_demo_model(demo_run, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "focsam_onnx.cli", "serve", "--images",
            str(REPO_ROOT / "examples"), "--out", str(tmp_path / "labels"), "--port", str(port),
            "--threads", "1", "--prefetch", "0"]
    with open(log, "wb") as sink:
        server = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                  env=cli_env(demo_run.cache))
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 300
        while f"open {url}" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with urllib.request.urlopen(url + "api/health", timeout=30) as response:
            assert response.status == 200
        assert SAYS_DEMO in log.read_text()
        assert f"{DEMO}: the export made on first use" in log.read_text()
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                    reason="needs git and make")
def test_make_demo_segment_runs_from_a_clean_clone(demo_run, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    # This environment stands in for the one `make` would create (no reinstall).
    done = subprocess.run(["make", "-s", "demo-segment", f"VENV={sys.prefix}"], cwd=clone,
                          env=cli_env(demo_run.cache), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SAYS_DEMO in done.stdout
    mask = cv2.imread(str(clone / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == heldout_scene(DEMO_SCENE).image.shape[:2]
    assert (clone / "overlay.png").is_file()


def test_make_demo_segment_uses_this_example():
    example = str(DEMO_EXAMPLE.relative_to(REPO_ROOT))
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"EXAMPLE = {example}\n" in makefile
    assert f'$(CLI) segment $(EXAMPLE) --clicks "{DEMO_CLICKS}" ' in makefile


def test_three_clicks_segment_every_compact_object_of_the_examples(demo_engine):
    """The NoC protocol's first three clicks (refiner at the second) on each compact object of
    the example scenes: IoU >= 0.85 on every one."""
    for index in EXAMPLE_SCENES:
        scene = heldout_scene(index)
        image = np.ascontiguousarray(scene.image[..., ::-1])
        for k in scene.compact():
            after, _ = run_object(demo_engine, image, scene.masks[k], random.Random(index),
                                  MODES["focsam"], num_clicks=3)
            assert after[-1] >= 0.85, f"scene {index}, object {k}: IoU {after}"


def touching_pair(scene) -> tuple[int, int] | None:
    """Two compact objects of `scene` whose masks touch (within 2 pixels), or None."""
    compact = scene.compact()
    for a in compact:
        grown = cv2.dilate(scene.masks[a].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        for b in compact:
            if b != a and (grown & scene.masks[b]).any():
                return a, b
    return None


@pytest.mark.xfail(strict=True, reason=(
    "known limitation of this demo model (README: Demo model): one click on an object that "
    "touches another often takes much of the neighbour too (the model card counts the touching "
    "pairs of held-out scenes 0-39); strict, so the day a model passes, this fails and goes"))
def test_a_click_on_one_object_does_not_select_its_neighbour(demo_engine):
    """In the first held-out scenes with touching compact objects, one click at the middle of an
    object gives that object and leaves its neighbour out."""
    checked = 0
    for index in range(40):
        scene = heldout_scene(index)
        pair = touching_pair(scene)
        if pair is None:
            continue
        target, neighbour = pair
        x, y = interior_point(scene.masks[target])
        session = ClickSession(demo_engine,
                               demo_engine.open_image(np.ascontiguousarray(scene.image[..., ::-1])))
        mask = session.click(x, y).mask
        taken = (mask & scene.masks[neighbour]).sum() / scene.masks[neighbour].sum()
        assert taken < 0.05, f"scene {index}: {taken:.1%} of object {neighbour} selected"
        assert binary_iou(mask, scene.masks[target]) >= 0.8, f"scene {index}"
        checked += 1
        if checked == 3:
            return
    pytest.fail(f"only {checked} held-out scenes with touching objects in the first 40")
