"""The engine around the graphs: model directories, the embedding cache, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from focsam_onnx.engine.cache import EmbeddingCache, cache_key
from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.image_io import load_image
from focsam_onnx.engine.loaded_model import open_model_dir
from focsam_onnx.engine.sessions import ModelDirError

REPO_ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_image(REPO_ROOT / "examples" / "shapes.png")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return open_model_dir(tiny_model_dir, threads=2)


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def test_reopening_an_image_does_not_run_the_encoder(model, image):
    engine = FocSAMEngine(model)
    first = engine.open_image(image)
    again = engine.open_image(image.copy())
    assert engine.encoder_runs == 1 and again.from_cache and not first.from_cache
    assert again.embeddings is first.embeddings
    other = engine.open_image(np.ascontiguousarray(image[:, ::-1]))
    assert engine.encoder_runs == 2 and not np.array_equal(other.embeddings, first.embeddings)


def test_objects_on_one_image_share_the_embeddings(model, image):
    engine = FocSAMEngine(model)
    encoded = engine.open_image(image)
    a, b = ClickSession(engine, encoded), ClickSession(engine, encoded)
    mask_a = a.click(100, 150).mask
    mask_b = b.click(300, 60).mask
    assert engine.encoder_runs == 1 and not np.array_equal(mask_a, mask_b)
    assert not encoded.embeddings.flags.writeable


def test_disk_cache_serves_a_new_engine(model, image, tmp_path):
    first = FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path))
    expected = first.open_image(image).embeddings
    second = FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path))
    reopened = second.open_image(image)
    assert second.encoder_runs == 0 and reopened.from_cache
    assert np.array_equal(reopened.embeddings, expected)


def test_corrupt_cache_entry_is_recomputed(model, image, tmp_path, caplog):
    FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path)).open_image(image)
    (data,) = tmp_path.glob("*.bin")
    raw = bytearray(data.read_bytes())
    raw[1000] ^= 0xFF
    data.write_bytes(bytes(raw))
    engine = FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path))
    encoded = engine.open_image(image)
    assert engine.encoder_runs == 1 and not encoded.from_cache
    assert "corrupt cache entry" in caplog.text
    fresh = FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path))  # the entry was rewritten
    assert np.array_equal(fresh.open_image(image).embeddings, encoded.embeddings)
    assert fresh.encoder_runs == 0


def test_cache_entry_of_another_model_is_not_used(model, image, tmp_path, caplog):
    cache = EmbeddingCache(cache_dir=tmp_path)
    encoded = FocSAMEngine(model, cache).open_image(image)
    # Another model's entry under this model's key (e.g. a copied cache folder): never trusted.
    key = cache_key(encoded.image_hash, model.model_id, "fp32")
    meta = json.loads((tmp_path / f"{key}.json").read_text())
    meta["model_id"] = "another-model"
    (tmp_path / f"{key}.json").write_text(json.dumps(meta))
    engine = FocSAMEngine(model, EmbeddingCache(cache_dir=tmp_path))
    assert not engine.open_image(image).from_cache and engine.encoder_runs == 1
    assert "another image, model or precision" in caplog.text
    assert EmbeddingCache(cache_dir=tmp_path).get(encoded.image_hash, "another-model",
                                                  "fp32") is None


def test_click_outside_the_image_is_refused(model, image):
    engine = FocSAMEngine(model)
    session = ClickSession(engine, engine.open_image(image))
    height, width = image.shape[:2]
    with pytest.raises(ValueError, match=rf"outside the {width}x{height} image"):
        session.click(width, 10)
    with pytest.raises(ValueError, match="outside"):
        session.click(5, -1)
    assert session.steps == 0  # nothing was lost


def test_missing_graph_file(model_copy):
    (model_copy / "refiner.onnx").unlink()
    with pytest.raises(ModelDirError, match=r"refiner\.onnx is missing; re-export"):
        open_model_dir(model_copy)


def test_truncated_graph_file(model_copy):
    path = model_copy / "decoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelDirError, match=r"decoder\.onnx has 1000 bytes, the manifest says"):
        open_model_dir(model_copy)


def test_altered_graph_file(model_copy):
    path = model_copy / "encoder.onnx"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelDirError, match=r"encoder\.onnx does not match its stamp"):
        open_model_dir(model_copy)


def test_model_dir_of_another_format_version(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="format_version is 99; this focsam-onnx reads format"):
        open_model_dir(model_copy)


def test_folder_without_manifest(tmp_path):
    with pytest.raises(ModelDirError, match="not an exported model directory"):
        open_model_dir(tmp_path)


def test_engine_never_imports_torch():
    code = ("import pkgutil, importlib, sys, focsam_onnx.engine as e\n"
            "names = [m.name for m in pkgutil.iter_modules(e.__path__)]\n"
            "for n in names: importlib.import_module('focsam_onnx.engine.' + n)\n"
            "import focsam_onnx.cli\n"
            "assert len(names) >= 15, names\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("mutate, field", [
    (lambda m: [m], "must be a JSON object, got list"),
    (lambda m: {k: v for k, v in m.items() if k != "model_id"}, "field 'model_id' is missing"),
    (lambda m: {**m, "files": None}, "field 'files' must be Mapping"),
    (lambda m: {**m, "files": {"encoder.onnx": {"size": "big", "sha256": "0"}}},
     r"field files\['encoder.onnx'\].size must be int"),
    (lambda m: {**m, "config": {**m["config"], "refiner": {"depth": "two"}}},
     "config.refiner.depth must be a number"),
    (lambda m: {**m, "parity": {"decoder": {"simplified": True}}},
     r"field parity\['decoder'\].max_abs_diff is missing"),
    (lambda m: {**m, "surprise": 1}, r"unknown field\(s\) \['surprise'\]"),
])
def test_manifest_of_the_wrong_shape_names_the_field(model_copy, mutate, field):
    path = model_copy / "manifest.json"
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(ModelDirError, match=field):
        open_model_dir(model_copy)


def test_manifest_round_trips(tiny_model_dir):
    from focsam_onnx.engine.manifest import Manifest

    data = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert json.loads(json.dumps(Manifest.from_dict(data).to_dict())) == data
