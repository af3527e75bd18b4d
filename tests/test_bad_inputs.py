"""Every bad input a user can give, through the real command line in a subprocess: a non-zero
exit, one `error:` line naming the problem, no traceback, and no partial output left behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("focsam-onnx")
IMAGE = REPO / "examples" / "shapes.png"  # 320x240


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with one `error:` line holding every word; returns that line."""
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(errors) == 1, done.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".new", ".old"))]


def segment(model: Path, *args: str | Path, clicks: str = "170,125,+") -> list[str | Path]:
    return ["segment", IMAGE, "--model", model, "--clicks", clicks, *args]


# ------------------------------------------------------------------------------------ segment


@pytest.mark.parametrize("name, words", [
    ("mask.jpg", ("lossless", "lossy .jpg")),
    ("mask.webp", ("lossless", "lossy .webp")),
    ("mask.xyz", ("lossless", ".xyz is not an image format")),
    ("mask", ("lossless", "no extension")),
])
def test_segment_refuses_a_mask_file_that_would_not_be_exact(tiny_model_dir, tmp_path, name,
                                                              words):
    cache = tmp_path / "cache"
    done = cli(*segment(tiny_model_dir, "--out", tmp_path / name, "--cache-dir", cache))
    assert_refused(done, *words)
    assert not (tmp_path / name).exists()
    assert not cache.exists()  # refused before the model loaded and the encoder ran


def test_segment_refuses_bad_output_places_before_the_model_loads(tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("")
    cache = tmp_path / "cache"
    assert_refused(cli(*segment(tiny_model_dir, "--out", tmp_path, "--cache-dir", cache)),
                   "is a folder")
    assert_refused(cli(*segment(tiny_model_dir, "--out", tmp_path / "file" / "m.png")),
                   "is a file, not a folder")
    assert_refused(cli(*segment(tiny_model_dir, "--overlay", tmp_path / "o.xyz",
                                "--out", tmp_path / "m.png")), "cannot write .xyz")
    assert not cache.exists() and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("args, words", [
    (("--clicks", "170,125,+;400,10,-"), ("x=400", "outside the 320x240 image")),
    (("--clicks", "170,125,+", "--threads", "0"), ("threads must be >= 1",)),
    (("--clicks", "170,125,+", "--threads", "-4"), ("threads must be >= 1",)),
    (("--clicks", "170,125,+", "--refine-at", "-2"), ("--refine-at",)),
    (("--clicks", "170,x,+"), ("not X,Y,LABEL",)),
])
def test_segment_checks_its_options_before_the_model_loads(tiny_model_dir, tmp_path, args,
                                                           words):
    cache = tmp_path / "cache"
    done = cli("segment", IMAGE, "--model", tiny_model_dir, "--out", tmp_path / "m.png",
               "--cache-dir", cache, *args)
    assert_refused(done, *words)
    assert not cache.exists() and not (tmp_path / "m.png").exists()


def test_segment_refuses_a_cache_dir_that_is_a_file(tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("")
    for cache in (tmp_path / "file", tmp_path / "file" / "below"):
        done = cli(*segment(tiny_model_dir, "--out", tmp_path / "m.png", "--cache-dir", cache))
        assert_refused(done, "cache folder", "is a file")
    assert not (tmp_path / "m.png").exists()


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in."""
    if os.geteuid() == 0:  # file modes do not stop root; sysfs refuses new files to anyone
        return Path("/sys/kernel")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_an_unwritable_cache_costs_a_warning_not_the_mask(tiny_model_dir, tmp_path):
    done = cli(*segment(tiny_model_dir, "--out", tmp_path / "m.png", "--cache-dir",
                        unwritable_folder(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "memory only" in done.stderr and "Traceback" not in done.stderr
    mask = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}


def test_a_truncated_cache_entry_with_a_matching_checksum_is_replaced(tiny_model_dir, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "m.png"
    assert cli(*segment(tiny_model_dir, "--out", out, "--cache-dir", cache)).returncode == 0
    expected = out.read_bytes()
    (data,) = cache.glob("*.bin")
    (meta,) = cache.glob("*.json")
    shortened = data.read_bytes()[:1024 * 4]
    data.write_bytes(shortened)  # and forge the checksum, so only the size can tell
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "sha256": hashlib.sha256(shortened).hexdigest()}))
    for _ in range(2):  # the first rerun re-encodes and rewrites the entry, the second reads it
        out.unlink()
        done = cli(*segment(tiny_model_dir, "--out", out, "--cache-dir", cache))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == expected
    assert data.stat().st_size == 256 * 64 * 64 * 4
    assert "from cache" in done.stdout


def test_segment_refuses_a_missing_model_and_image(tiny_model_dir, tmp_path):
    done = cli("segment", IMAGE, "--model", tmp_path, "--clicks", "1,1,+", "--out",
               tmp_path / "m.png")
    assert_refused(done, "not an exported model directory")
    done = cli("segment", tmp_path / "no.png", "--model", tiny_model_dir, "--clicks", "1,1,+",
               "--out", tmp_path / "m.png")
    assert_refused(done, "not found", "no.png")
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda m: [m], ("manifest.json",)),
    (lambda m: {k: v for k, v in m.items() if k != "model_id"}, ("model_id",)),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, ("files",)),
])
def test_segment_refuses_a_manifest_of_the_wrong_shape(tiny_model_dir, tmp_path, damage, words):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps(damage(manifest)))
    done = cli(*segment(model, "--out", tmp_path / "m.png"))
    assert_refused(done, "re-export", *words)
    assert not (tmp_path / "m.png").exists()


def test_a_long_click_list_gets_a_progress_bar_and_a_short_table(tiny_model_dir, tmp_path):
    clicks = ";".join(f"{10 + 3 * i},{20 + 2 * i},{'+' if i % 2 == 0 else '-'}"
                      for i in range(23))
    done = cli(*segment(tiny_model_dir, "--out", tmp_path / "m.png", clicks=clicks))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 21 and "…" in rows[10] and rows[-1].split("│")[1].strip() == "23"


# ------------------------------------------------------------------------------------- export


def test_export_refuses_an_out_that_it_would_clobber(tiny_model_dir, tmp_path):
    (tmp_path / "file").write_text("notes")
    assert_refused(cli("export", "--random-init", "tiny", "--out", tmp_path / "file"),
                   "is a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert_refused(cli("export", "--random-init", "tiny", "--out", tmp_path / "mine", "--force"),
                   "not an export")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert_refused(cli("export", "--random-init", "tiny", "--out", tiny_model_dir), "--force")
    assert_refused(cli("export", "--ckpt", tmp_path / "none.pth", "--out", tmp_path / "o"),
                   "none.pth", "not found")
    assert_refused(cli("export", "--random-init", "vit_q", "--out", tmp_path / "o"), "vit_q")
    assert not (tmp_path / "o").exists() and not leftovers(tmp_path)


def test_ctrl_c_during_a_re_export_leaves_the_previous_model_intact(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    # The child must get Ctrl-C as a user's shell gives it: a signal ignored here (an earlier
    # test can leave SIGINT ignored) stays ignored in a child, and the export then ran to its end.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = subprocess.Popen([str(CLI), "export", "--random-init", "tiny", "--seed", "1",
                                  "--out", str(model), "--force"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 240
    while not any(p.suffix == ".onnx" for p in tmp_path.glob(".model.*.new/*")):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)  # Ctrl-C with the first new graph already written
    _, stderr = child.communicate(timeout=120)
    assert child.returncode != 0 and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert not leftovers(tmp_path)
    done = cli(*segment(model, "--out", tmp_path / "m.png"))
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A `folder` dataset of two 48x64 images with a rectangle each."""
    root = tmp_path_factory.mktemp("bad_inputs_dataset")
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    for k in range(2):
        image = np.random.default_rng(k).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 12 + k:40] = 255
        cv2.imwrite(str(root / "images" / f"s{k}.png"), image)
        cv2.imwrite(str(root / "masks" / f"s{k}.png"), mask)
    return root


def evaluate(model: Path, data: Path, out: Path, *args: str) -> list[str | Path]:
    return ["evaluate", "--model", model, "--dataset", "folder", "--data-root", data,
            "--out", out, *args]


@pytest.mark.parametrize("args, words", [
    (("--limit", "0"), ("limit must be >= 1",)),
    (("--limit", "-1"), ("limit must be >= 1",)),
    (("--mode", "fast"), ("mode must be one of", "'fast'")),
    (("--seed-mode", "random"), ("seed mode", "'random'")),
    (("--threads", "0"), ("threads must be >= 1",)),
])
def test_evaluate_checks_its_options_first(tmp_path, dataset, args, words):
    # A missing model: each option is refused before the model would be looked at.
    assert_refused(cli(*evaluate(tmp_path / "no-model", dataset, tmp_path / "r", *args)), *words)
    assert not (tmp_path / "r").exists()


def test_evaluate_refuses_bad_places(tiny_model_dir, tmp_path, dataset):
    (tmp_path / "file").write_text("")
    assert_refused(cli(*evaluate(tiny_model_dir, dataset, tmp_path / "file")), "is a file")
    assert_refused(cli(*evaluate(tiny_model_dir, tmp_path / "none", tmp_path / "r")),
                   "is not a directory")
    assert not (tmp_path / "r").exists()


def test_evaluate_resumes_only_the_same_run_and_its_table_fits_80_columns(tiny_model_dir,
                                                                          tmp_path, dataset):
    out = tmp_path / "r"
    done = cli(*evaluate(tiny_model_dir, dataset, out, "--limit", "1"))
    assert done.returncode == 0, done.stderr
    assert "mIoU@20" in done.stdout and max(map(len, done.stdout.splitlines())) <= 80
    first = (out / "metrics.json").read_bytes()
    assert_refused(cli(*evaluate(tiny_model_dir, dataset, out)), "limit 1 -> None",
                   "--restart")
    assert (out / "metrics.json").read_bytes() == first
    done = cli(*evaluate(tiny_model_dir, dataset, out, "--restart"))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["samples"] == 2


def test_version():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("focsam-onnx 0.")
