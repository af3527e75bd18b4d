"""The SAM-compatible pair: segment-anything's `SamOnnxModel` outputs, the encoder's in-graph
preprocessing, the manifest's opset / IR per file, the X-AnyLabeling config, and the file
layout: one copy of each decoder constant, and weights kept outside the graph files (ViT-H)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

from focsam_onnx.bench.baselines import export_sam_onnx_decoder
from focsam_onnx.engine.graph_spec import ENCODER, SAM_DECODER, SAM_ENCODER
from focsam_onnx.engine.integrity import files_to_check, find_damaged
from focsam_onnx.engine.loaded_model import read_manifest
from focsam_onnx.engine.preprocess import PIXEL_MEAN, PIXEL_STD, preprocess

pytestmark = pytest.mark.parity

# (H, W): landscape, portrait, a panorama; SamOnnxModel freezes its crop, so one export each.
SIZES = [(480, 640), (1500, 1000), (300, 2000)]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def ours(sam_vit_b_export) -> ort.InferenceSession:
    return _session(sam_vit_b_export[1] / SAM_DECODER.filename)


@pytest.fixture(scope="module", params=SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def official(request, sam_vit_b_export, tmp_path_factory):
    """segment-anything's own ONNX decoder of the same weights, traced at this orig_im_size."""
    path = tmp_path_factory.mktemp("sam_onnx_model") / "decoder.onnx"
    return request.param, _session(export_sam_onnx_decoder(sam_vit_b_export[0], path,
                                                           orig_hw=request.param))


def _clicks(n: int) -> tuple[list, list]:
    """n clicks and the padding point."""
    xy = np.random.default_rng(n).uniform(0, 1023, (n, 2)).tolist()
    return [*xy, [0.0, 0.0]], [i % 2 for i in range(n)] + [-1]


# The graph folds the image-side projections up to FOLD_MAX_POINTS points (11), and runs the
# decoder as written from 12: both branches against the official export.
PROMPTS = {"click + padding": ([[400.0, 300.0], [0.0, 0.0]], [1, -1]),
           "box + click": ([[510.0, 330.0], [100.0, 80.0], [900.0, 700.0]], [1, 2, 3]),
           "box + padding, mask": ([[100.0, 80.0], [900.0, 700.0], [0.0, 0.0]], [2, 3, -1]),
           "10 clicks + padding": _clicks(10), "11 clicks + padding, mask": _clicks(11)}


def test_the_decoder_branches_on_the_point_count(sam_vit_b_export):
    from focsam_onnx.config import FOLD_MAX_POINTS

    graph = onnx.load(str(sam_vit_b_export[1] / SAM_DECODER.filename))
    assert [n.op_type for n in graph.graph.node] == ["Shape", "Gather", "LessOrEqual", "If"]
    assert graph.graph.node[0].input == [SAM_DECODER.input_names[1]]  # point_coords
    limit = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}[
        graph.graph.node[2].input[1]]
    assert int(limit) == FOLD_MAX_POINTS == 11
    then, otherwise = (a.g for a in graph.graph.node[3].attribute)
    assert Counter(n.op_type for n in then.node) != Counter(n.op_type for n in otherwise.node)


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_outputs_equal_sam_onnx_model(ours, official, prompt):
    hw, theirs = official
    rng = np.random.default_rng(len(prompt))
    coords, labels = PROMPTS[prompt]
    feeds = dict(zip(SAM_DECODER.input_names, (
        rng.normal(size=(1, 256, 64, 64)).astype(np.float32),
        np.array([coords], np.float32), np.array([labels], np.float32),
        rng.normal(size=(1, 1, 256, 256)).astype(np.float32) * 3,
        np.array([1.0 if "mask" in prompt else 0.0], np.float32),
        np.array(hw, np.float32))))
    got = ours.run(None, feeds)
    want = theirs.run(None, feeds)
    assert [o.name for o in ours.get_outputs()] == [o.name for o in theirs.get_outputs()]
    assert got[0].shape == want[0].shape == (1, 4, *hw)
    for name, a, b in zip(SAM_DECODER.output_names, got, want):
        assert np.abs(a - b).max() <= 1e-4, name
    assert np.abs(got[0]).max() > 1e-2


def test_encoder_preprocessing_is_the_native_one_where_they_coincide(tiny_sam_pair_dir):
    """A 768 x 1024 image needs no /32 pad and no resize: upstream FocSAM's preprocessing of
    its BGR array must then equal the SAM encoder's in-graph flip / normalise / pad."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    (native,) = _session(tiny_sam_pair_dir / ENCODER.filename).run(
        None, {ENCODER.inputs[0].name: preprocess(np.ascontiguousarray(rgb[..., ::-1]))[0]})
    (sam,) = _session(tiny_sam_pair_dir / SAM_ENCODER.filename).run(
        None, {SAM_ENCODER.inputs[0].name: rgb.astype(np.float32)})
    assert np.abs(native - sam).max() <= 1e-5
    (unflipped,) = _session(tiny_sam_pair_dir / SAM_ENCODER.filename).run(
        None, {SAM_ENCODER.inputs[0].name: np.ascontiguousarray(rgb[..., ::-1], np.float32)})
    assert np.abs(native - unflipped).max() > 1e-3  # the channel order reaches the ViT


def test_manifest_states_opset_and_ir_per_file(tiny_sam_pair_dir):
    manifest = json.loads((tiny_sam_pair_dir / "manifest.json").read_text())
    files = manifest["files"]
    for name in (SAM_ENCODER.filename, SAM_DECODER.filename):
        assert (files[name]["opset"], files[name]["ir_version"]) == (17, 8), name
    assert files["refiner.onnx"]["opset"] == 19  # DeformConv
    assert {"sam_encoder", "sam_decoder"} <= set(manifest["graphs"])
    assert manifest["graphs"]["sam_decoder"]["inputs"][-1]["name"] == "orig_im_size"


def test_xanylabeling_config_names_the_pair(tiny_sam_pair_dir):
    config = yaml.safe_load((tiny_sam_pair_dir / "xanylabeling.yaml").read_text())
    assert config["type"] == "segment_anything" and config["name"] == "focsam_onnx_focsam_tiny"
    for key in ("encoder_model_path", "decoder_model_path"):
        assert (tiny_sam_pair_dir / config[key]).is_file()  # relative to the config's folder
    assert (config["input_size"], config["max_width"], config["max_height"]) == (1024, 1024, 682)
    assert config["display_name"]


def test_decoder_stores_each_constant_once(tiny_sam_pair_dir):
    """The TorchScript exporter writes a folded constant once per consumer (the grid's
    positional encoding came out three times, 8 MB of copies); the export keeps one of each."""
    graph = onnx.load(str(tiny_sam_pair_dir / SAM_DECODER.filename))
    tensors = [*graph.graph.initializer,
               *(a.t for n in graph.graph.node if n.op_type == "Constant" for a in n.attribute)]
    contents = Counter((t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
                       for t in tensors if np.prod(t.dims) > 16)
    assert contents and max(contents.values()) == 1


def test_weights_outside_the_graph_files_are_shared(external_data_sam_pair_dir):
    """Laid out as ViT-H is (weights in encoder.onnx.data), sam_encoder.onnx holds only the
    graph and reads the native encoder's weights file, which the manifest lists once; its
    embeddings are the native encoder's where the preprocessing coincides (1024 x 1024)."""
    model_dir = external_data_sam_pair_dir
    graph = onnx.load(str(model_dir / SAM_ENCODER.filename), load_external_data=False)
    locations = {entry.value for t in graph.graph.initializer
                 if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {"encoder.onnx.data"}
    manifest = read_manifest(model_dir)
    assert find_damaged(model_dir, manifest) == []
    assert {"encoder.onnx.data", SAM_ENCODER.filename} <= set(manifest.files)
    # opening either encoder reads and checks the weights file too
    for graph_file in (ENCODER.filename, SAM_ENCODER.filename):
        assert manifest.files[graph_file].external_data == ("encoder.onnx.data",)
        assert files_to_check(manifest, [graph_file]) == [graph_file, "encoder.onnx.data"]
    rgb = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3)).astype(np.float32)
    network_input = ((rgb - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)[None]  # plain SAM: RGB
    (native,) = _session(model_dir / ENCODER.filename).run(
        None, {ENCODER.inputs[0].name: network_input.astype(np.float32)})
    (sam,) = _session(model_dir / SAM_ENCODER.filename).run(
        None, {SAM_ENCODER.inputs[0].name: rgb})
    assert np.abs(native - sam).max() <= 1e-5
    assert np.abs(native).max() > 1e-2
