"""Opening a model reads and checks only what it loads, by size and stamp; `verify` reads all.

The stamp (engine/integrity.py) hashes a file's size, its first and last MiB and 16 blocks
between them. These tests pin what it catches on open, what it leaves to the full check, and
that an encode-only open never touches the decoder's or the refiner's files.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from focsam_onnx.engine.embed import encoding_engine
from focsam_onnx.engine.integrity import (
    MIB,
    file_sha256,
    file_stamp,
    find_damaged,
    stamp_blocks,
    verify_files,
)
from focsam_onnx.engine.loaded_model import ENCODER_ONLY, LoadedModel, open_model_dir, read_manifest
from focsam_onnx.engine.manifest import MANIFEST
from focsam_onnx.engine.sessions import ModelDirError, ModelDirNotFound
from focsam_onnx.errors import DamagedData, InvalidInput, NotFound


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _edit_manifest(model_dir, edit):
    path = model_dir / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _add_big_file(model_dir, size=8 * MIB):
    """A file over the stamp's whole-file limit, listed in the manifest as the export lists."""
    path = model_dir / "big.bin"
    path.write_bytes(np.random.default_rng(0).bytes(size))
    _edit_manifest(model_dir, lambda m: m["files"].__setitem__(
        "big.bin", {"size": size, "sha256": file_sha256(path), "stamp": file_stamp(path)}))
    return path


def test_the_stamp_reads_at_most_3_mib_and_spans_the_file():
    assert stamp_blocks(3 * MIB) == [(0, 3 * MIB)]  # small files are hashed whole
    size = 2_500_000_000  # ViT-H's encoder weights
    blocks = stamp_blocks(size)
    assert sum(length for _, length in blocks) <= 3 * MIB
    assert blocks[0] == (0, MIB) and blocks[-1] == (size - MIB, MIB)
    starts = [offset for offset, _ in blocks]
    assert starts == sorted(starts) and max(np.diff(starts)) < size // 16  # no large blind gap


def test_an_encode_only_open_loads_and_checks_the_encoder_alone(model_copy):
    for name in ("decoder.onnx", "refiner.onnx"):
        (model_copy / name).write_bytes(b"not a graph")  # damaged: a full open refuses
    engine = encoding_engine(model_copy, threads=1)
    assert isinstance(engine.model, LoadedModel) and engine.model.sessions == {}
    embeddings = engine.open_image(np.zeros((64, 96, 3), np.uint8)).embeddings
    assert embeddings.shape == (1, 256, 64, 64) and engine.encoder_runs == 1
    with pytest.raises(ModelDirError, match=r"decoder\.onnx has 11 bytes"):
        open_model_dir(model_copy, threads=1)


def test_a_click_open_does_not_need_the_encoder_precisions_it_does_not_run(model_copy):
    (model_copy / "encoder.onnx").unlink()
    model = open_model_dir(model_copy, threads=1, graphs=("decoder", "refiner"))
    assert set(model.sessions) == {"decoder", "refiner"}
    with pytest.raises(RuntimeError, match="opened without its encoder"):
        model.encoder.run(np.zeros((1, 3, 1024, 1024), np.float32))
    with pytest.raises(ModelDirError, match=r"encoder\.onnx is missing; re-export"):
        open_model_dir(model_copy, threads=1, graphs=ENCODER_ONLY)


@pytest.mark.parametrize("graphs", [(), ("encoder", "decoders"), "encoder"])
def test_graphs_must_be_named_from_the_three(tiny_model_dir, graphs):
    with pytest.raises(InvalidInput, match="graphs must be some of"):
        open_model_dir(tiny_model_dir, graphs=graphs)


def test_open_catches_a_replaced_file_of_the_same_size(model_copy):
    decoder, refiner = model_copy / "decoder.onnx", model_copy / "refiner.onnx"
    size = refiner.stat().st_size
    assert decoder.stat().st_size > size
    refiner.write_bytes(decoder.read_bytes()[:size])  # another graph's bytes, same length
    with pytest.raises(ModelDirError, match=r"refiner\.onnx does not match its stamp"):
        open_model_dir(model_copy, threads=1)


def test_a_same_size_change_between_the_samples_is_left_to_verify(model_copy):
    big = _add_big_file(model_copy)
    manifest = read_manifest(model_copy)
    verify_files(model_copy, manifest, ["big.bin"])
    _flip(big, 2 * MIB)  # between the head and the first sample
    verify_files(model_copy, manifest, ["big.bin"])  # the stamp's documented blind spot
    assert find_damaged(model_copy, manifest) == [
        f"{big} does not match its sha256 in the manifest (altered after export)"]
    _flip(big, 8 * MIB - 10)  # the tail is sampled
    with pytest.raises(ModelDirError, match=r"big\.bin does not match its stamp"):
        verify_files(model_copy, manifest, ["big.bin"])


def test_find_damaged_names_every_bad_file_and_reports_every_byte(model_copy):
    manifest = read_manifest(model_copy)
    (model_copy / "refiner.onnx").unlink()
    _flip(model_copy / "decoder.onnx", 100)
    seen = []
    problems = find_damaged(model_copy, manifest, seen.append)
    assert problems == [
        f"{model_copy / 'decoder.onnx'} does not match its sha256 in the manifest (altered after "
        "export)", f"{model_copy / 'refiner.onnx'} is missing"]
    assert sum(seen) == sum(entry.size for entry in manifest.files.values())


def test_a_format_2_manifest_still_opens_and_is_hashed_whole(model_copy):
    def as_format_2(data):
        data["format_version"] = 2
        for entry in data["files"].values():
            entry.pop("stamp", None)
            entry.pop("external_data", None)

    _edit_manifest(model_copy, as_format_2)
    assert open_model_dir(model_copy, threads=1, graphs=ENCODER_ONLY).manifest.format_version == 2
    _flip(model_copy / "refiner.onnx", 5000)  # unloaded, but format 2 cannot say so: all hashed
    with pytest.raises(ModelDirError, match=r"refiner\.onnx does not match its sha256"):
        open_model_dir(model_copy, threads=1, graphs=ENCODER_ONLY)


def test_model_folder_errors_are_of_the_library_kinds(tmp_path):
    with pytest.raises(ModelDirNotFound) as missing:
        open_model_dir(tmp_path / "nowhere")
    assert isinstance(missing.value, NotFound) and missing.value.http_status == 404
    with pytest.raises(ModelDirError) as empty:
        open_model_dir(tmp_path)
    assert isinstance(empty.value, DamagedData) and isinstance(empty.value, ValueError)
    assert not isinstance(empty.value, NotFound)
