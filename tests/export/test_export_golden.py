"""The exported golden tiny model, run by onnxruntime alone, against upstream's numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from focsam_onnx.config import get_variant
from focsam_onnx.engine.graph_spec import DECODER, GRAPHS, REFINER
from focsam_onnx.engine.integrity import file_sha256, file_stamp
from focsam_onnx.engine.loaded_model import open_model_dir, read_manifest
from focsam_onnx.engine.manifest import FileEntry, Source
from focsam_onnx.export.parity import ParityError, check_parity, max_abs_diff
from focsam_onnx.export.wrappers import graph_exports

DECODER_CASES = ["decoder_1click", "decoder_3clicks", "decoder_6clicks"]
GOLDEN_CHECKPOINT_SHA256 = "69959c90b6a65662544d99ba58514d629e47c40bfd92120e929471c029b6fc0e"
REFINER_CASES = ["refiner_middle", "refiner_border", "refiner_tiny", "refiner_allneg"]


@pytest.fixture(scope="module")
def model(golden_model_dir):
    return open_model_dir(golden_model_dir, threads=2)


@pytest.fixture(scope="module")
def sessions(model):
    return model.sessions


def test_encoder_matches_upstream(model, load_golden):
    enc = load_golden("encoder")
    emb = model.encoder.run(enc["input"])
    assert max_abs_diff(emb, enc["image_embeds"]) <= 1e-4


@pytest.mark.parametrize("case", DECODER_CASES)
def test_decoder_matches_upstream(sessions, load_golden, case):
    enc, dec = load_golden("encoder"), load_golden(case)
    n = dec["coords"].shape[1]
    coords = np.concatenate([dec["coords"], np.zeros((1, 1, 2), np.float32)], axis=1)
    labels = np.concatenate([dec["labels"], -np.ones((1, 1), np.float32)], axis=1)
    has_prev = "prev_logits" in dec
    prev = dec["prev_logits"] if has_prev else np.zeros((1, 1, 256, 256), np.float32)
    feeds = dict(zip(DECODER.input_names, (enc["image_embeds"], coords, labels, prev,
                                            np.array([float(has_prev)], np.float32))))
    low_res, token, iou = sessions["decoder"].run(None, feeds)
    assert coords.shape[1] == n + 1
    assert max_abs_diff(low_res, dec["masks_all"][:, :1]) <= 1e-5
    assert max_abs_diff(token, dec["mask_token"]) <= 1e-4
    assert max_abs_diff(iou, dec["iou_pred"]) <= 1e-5


def test_decoder_ignores_mask_input_without_flag(sessions, load_golden):
    enc, dec = load_golden("encoder"), load_golden("decoder_1click")
    coords = np.concatenate([dec["coords"], np.zeros((1, 1, 2), np.float32)], axis=1)
    labels = np.concatenate([dec["labels"], -np.ones((1, 1), np.float32)], axis=1)
    noise = np.random.default_rng(0).normal(size=(1, 1, 256, 256)).astype(np.float32) * 10
    feeds = dict(zip(DECODER.input_names, (enc["image_embeds"], coords, labels, noise,
                                            np.zeros(1, np.float32))))
    low_res = sessions["decoder"].run(None, feeds)[0]
    assert max_abs_diff(low_res, dec["masks_all"][:, :1]) <= 1e-5


@pytest.mark.parametrize("case", REFINER_CASES)
def test_refiner_matches_upstream(sessions, load_golden, case):
    enc, ref = load_golden("encoder"), load_golden(case)
    proj = load_golden("refiner_middle")["embed_proj_out"]
    expected = proj.copy()
    expected[0][:, ref["changed_mask64"]] = ref["refined_values"]
    roi = ref["roi_mask64"].reshape(1, 1, 64, 64)
    feeds = dict(zip(REFINER.input_names, (enc["image_embeds"], ref["mask_token"], roi)))
    (refined,) = sessions["refiner"].run(None, feeds)
    assert max_abs_diff(refined, expected) <= 5e-4
    outside = ~ref["changed_mask64"]
    assert max_abs_diff(refined[0][:, outside], proj[0][:, outside]) <= 1e-4


def test_refiner_survives_an_empty_roi(sessions, load_golden):
    enc, ref = load_golden("encoder"), load_golden("refiner_middle")
    feeds = dict(zip(REFINER.input_names, (enc["image_embeds"], ref["mask_token"],
                                            np.zeros((1, 1, 64, 64), np.float32))))
    (refined,) = sessions["refiner"].run(None, feeds)
    assert max_abs_diff(refined, ref["embed_proj_out"]) <= 1e-4


def test_manifest_describes_the_export(golden_model_dir):
    manifest = read_manifest(golden_model_dir)
    assert manifest.variant == "tiny" and manifest.kind == "focsam"
    assert set(manifest.files) == {"encoder.onnx", "decoder.onnx", "refiner.onnx"}
    for name, entry in manifest.files.items():
        path = golden_model_dir / name
        model = onnx.load(str(path))
        assert entry == FileEntry(path.stat().st_size, file_sha256(path),
                                  model.opset_import[0].version, model.ir_version,
                                  file_stamp(path), ())
    assert {entry.opset for entry in manifest.files.values()} == {manifest.opset}
    # every output gated on the golden README's tolerance for that tensor
    for graph in GRAPHS:
        diffs = manifest.parity[graph.name].max_abs_diff
        assert list(diffs) == graph.output_names
        for out in graph.outputs:
            assert diffs[out.name] <= out.tolerance
    assert manifest.graphs["decoder"]["inputs"][1] == {
        "name": "point_coords", "shape": [1, "num_points", 2], "dtype": "float32"}
    assert manifest.config == get_variant("tiny")
    assert manifest.source == Source("focsam", path=manifest.source.path,
                                     sha256=GOLDEN_CHECKPOINT_SHA256)


def test_parity_gate_trips_on_altered_weights(golden_model_dir, golden, tmp_path):
    from focsam_onnx.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(golden / "tiny_focsam.pth")
    decoder = next(g for g in graph_exports(model) if g.spec.name == "decoder")
    graph = onnx.load(str(golden_model_dir / "decoder.onnx"))
    biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = onnx.numpy_helper.to_array(biggest).copy()
    weights.flat[: weights.size // 2] *= 1.5
    biggest.CopyFrom(onnx.numpy_helper.from_array(weights, biggest.name))
    altered = tmp_path / "decoder.onnx"
    onnx.save(graph, str(altered))
    with pytest.raises(ParityError, match=r"decoder\.onnx, case '[^']+': output '\w+' differs "
                                          r"from torch by [0-9.e+-]+ \(tolerance 1e-0[45] at its "
                                          r"values' scale\)"):
        check_parity(altered, DECODER, decoder.module, decoder.cases)
