"""bf16 click graphs (decoder and refiner on OpenVINO) on the golden checkpoint: the DeformConv
rewrite against upstream's refiner, the click-replay gate passing and tripping, bf16 sessions
against fp32, the caches, the recorded figures and the missing-extra error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from focsam_onnx.bench.cases import decoder_feeds
from focsam_onnx.config import FOLD_MAX_POINTS
from focsam_onnx.engine.click_runtime import (
    OpenVinoDecoder,
    OpenVinoGraph,
    bf16_rounded,
    deform_conv,
    kink_counts_as_bucketize,
    norms_as_mvn,
    open_click_graph,
    open_openvino_graph,
    softmax_long_rows,
    swap_blocks_as_nhwc,
    tables_in_bf16,
)
from focsam_onnx.engine.click_session import replay
from focsam_onnx.engine.encoder_runtime import openvino_config
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.graph_spec import DECODER, REFINER
from focsam_onnx.engine.loaded_model import open_model_dir, read_manifest
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.replay_cache import ReplayCache
from focsam_onnx.engine.sessions import ModelDirError
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import RunSettings, evaluate
from focsam_onnx.export.click_gate import CLICK_THRESHOLDS
from focsam_onnx.export.click_precision import add_click_precision
from focsam_onnx.export.parity import max_abs_diff
from focsam_onnx.export.quality_gate import GateCase, GateError, mask_agreement

pytestmark = pytest.mark.golden

SESSIONS = ("session_1", "session_2")
GATE_CLICKS = 5  # simulated clicks per synthetic scene (the export's default is 20)
REFINER_CASES = ["refiner_middle", "refiner_border", "refiner_tiny", "refiner_allneg"]


def golden_cases(load_golden) -> list[GateCase]:
    """The golden sessions' images, their recorded 20 clicks and their objects (for NoC@90)."""
    cases = []
    for name in SESSIONS:
        data = load_golden(name)
        clicks = tuple(Click(x=int(x), y=int(y), positive=bool(label))
                       for y, x, label in data["clicks_yx_label"])
        cases.append(GateCase(name, np.ascontiguousarray(data["image_rgb"][..., ::-1]),
                              gt=data["gt_mask"].astype(bool), clicks=clicks))
    return cases


def session_clicks(data) -> list[Click]:
    return [Click(int(x), int(y), bool(label)) for y, x, label in data["clicks_yx_label"]]


@pytest.fixture(scope="module")
def gated(golden_model_dir, load_golden, tmp_path_factory):
    """The golden export with bf16 click graphs added: (model dir, gate report)."""
    out = shutil.copytree(golden_model_dir, tmp_path_factory.mktemp("click_gated") / "model")
    report = add_click_precision(out, "bf16", golden_cases(load_golden), GATE_CLICKS, threads=2)
    return out, report


def test_openvino_deform_conv_rewrite_matches_upstream_refiner(golden_model_dir, load_golden):
    """The refiner in OpenVINO f32 (DeformConv as a projection and a sampling matrix) within the
    golden refiner tolerances of upstream's torch numbers, as onnxruntime's is."""
    refiner = open_click_graph(golden_model_dir / REFINER.filename, REFINER, "fp32", 2)
    assert isinstance(refiner, ort.InferenceSession)  # fp32 is onnxruntime, unchanged
    f32 = open_openvino_graph(golden_model_dir / REFINER.filename, REFINER,
                              openvino_config("fp32", 2))
    assert isinstance(f32, OpenVinoGraph)
    enc, proj = load_golden("encoder"), load_golden("refiner_middle")["embed_proj_out"]
    for case in REFINER_CASES:
        ref = load_golden(case)
        expected = proj.copy()
        expected[0][:, ref["changed_mask64"]] = ref["refined_values"]
        roi = ref["roi_mask64"].reshape(1, 1, 64, 64).astype(np.float32)
        feeds = dict(zip(REFINER.input_names, (enc["image_embeds"], ref["mask_token"], roi)))
        (refined,) = f32.run(None, feeds)
        assert max_abs_diff(refined, expected) <= 5e-4, case
        (bf16,) = open_click_graph(golden_model_dir / REFINER.filename, REFINER, "bf16",
                                   2).run(None, feeds)
        assert 1e-3 < max_abs_diff(bf16, expected), case  # bf16 really ran


@pytest.mark.parametrize("height, width, reach", [(16, 16, 3.0), (5, 7, 9.0), (2, 3, 4.0)])
def test_openvino_deform_conv_alone_matches_the_torch_dcn(height, width, reach):
    """DeformConv as the only node (the map an input, not the refiner's transposed windows) in
    OpenVINO f32 against `models/deform_conv.py`, with offsets that put many corners outside."""
    import openvino as ov
    import torch
    from onnx import TensorProto, helper
    from openvino.frontend.onnx import ConversionExtension

    from focsam_onnx.models.deform_conv import modulated_deform_conv3x3

    rng = np.random.default_rng(height)
    x, weight = (rng.standard_normal(s).astype(np.float32) for s in ((3, 8, height, width),
                                                                      (6, 8, 3, 3)))
    offset = rng.uniform(-reach, reach, (3, 18, height, width)).astype(np.float32)
    mask = rng.uniform(0, 1, (3, 9, height, width)).astype(np.float32)

    def tensor(name, a):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape))

    node = helper.make_node("DeformConv", ["x", "w", "offset", "", "mask"], ["y"],
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                            dilations=[1, 1], group=1, offset_group=1)
    graph = helper.make_graph([node], "dcn", [tensor("x", x), tensor("offset", offset),
                                              tensor("mask", mask)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("w", TensorProto.FLOAT, weight.shape,
                                                  weight.ravel())])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    core = ov.Core()
    core.add_extension(ConversionExtension("DeformConv", deform_conv))
    model = core.read_model(onnx_model.SerializeToString(), b"")
    request = core.compile_model(model, "CPU", openvino_config("fp32", 2)).create_infer_request()
    request.infer([x, offset, mask])
    expected = modulated_deform_conv3x3(*(torch.from_numpy(a) for a in (x, offset, mask, weight)))
    # The conversion holds sample positions in 2**-16 pixel fixed point (and torch's grid round
    # trip has its own float error): the golden refiner's 5e-4, on outputs of magnitude ~4.
    assert max_abs_diff(request.get_output_tensor(0).data, expected.numpy()) <= 5e-4


def test_openvino_decoder_runs_each_attention_order_inlined(golden_model_dir):
    """OpenVINO gets the decoder once per attention order, its `If`s gone (inlined), and both
    compute onnxruntime's logits: in f32 to float rounding, on either side of the fold limit."""
    path = golden_model_dir / DECODER.filename
    decoder = open_openvino_graph(path, DECODER, openvino_config("fp32", 2))
    assert isinstance(decoder, OpenVinoDecoder)
    for graph in (decoder.folded, decoder.projected):
        ops = {op.get_type_name() for op in graph.compiled.get_runtime_model().get_ops()}
        assert "If" not in ops
    exact = open_click_graph(path, DECODER, "fp32", 2)
    rng = np.random.default_rng(0)
    for clicks in (FOLD_MAX_POINTS - 1, FOLD_MAX_POINTS):  # points: clicks + the padding one
        feeds = decoder_feeds(clicks, rng)
        for ours, theirs in zip(decoder.run(None, feeds), exact.run(None, feeds)):
            assert ours.shape == theirs.shape
            assert max_abs_diff(ours, theirs) <= 1e-4 * max(1.0, np.abs(theirs).max())


@pytest.mark.parametrize("shape, rewritten", [
    ((1, 4096, 8, 5), True),  # image->token, folded: rows of 5 tokens for 4096 x 8
    ((1, 8, 4096, 5), True),  # image->token, projected
    ((1, 40, 4096), False),  # token->image: the rows are already long
    ((1, 8, 7, 7), False),  # the tokens' self-attention: nothing long
])
def test_softmax_rows_are_laid_along_the_long_axis(shape, rewritten):
    """A softmax over a short last axis beside a long one runs transposed, with the same values."""
    import openvino as ov
    from onnx import TensorProto, helper
    from openvino.frontend.onnx import ConversionExtension

    dims = [*shape[:-1], "tokens"]  # the token count is dynamic, as in the decoder
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    model_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    core = ov.Core()
    core.add_extension(ConversionExtension("Softmax", softmax_long_rows))
    model = core.read_model(model_bytes.SerializeToString(), b"")
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("Transpose") == (2 if rewritten else 0)
    x = np.random.default_rng(0).normal(0, 4, shape).astype(np.float32)
    request = core.compile_model(model, "CPU", openvino_config("fp32", 2)).create_infer_request()
    request.infer([x])
    exp = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(request.get_output_tensor(0).data, exp / exp.sum(-1, keepdims=True),
                               rtol=1e-5, atol=1e-7)


def _compiled_f32(model, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", openvino_config("fp32", 2))
    request = compiled.create_infer_request()
    request.infer([x])
    return request.get_output_tensor(0).data.copy()


def _orders(model) -> list[list[int]]:
    return [list(op.input_value(1).get_node().get_data()) for op in model.get_ordered_ops()
            if op.get_type_name() == "Transpose"]


@pytest.mark.parametrize("shape, order, rewritten", [
    ((3, 256, 64), [0, 2, 1], True),  # token-major <-> channel-major
    ((3, 64, 4, 4), [0, 2, 3, 1], True),  # NCHW -> NHWC
    ((3, 4, 4, 64), [0, 3, 1, 2], True),  # NHWC -> NCHW
    ((3, 8, 16, 4), [0, 2, 1, 3], False),  # heads <-> tokens: the last axis stays
])
def test_block_swapping_transposes_run_as_the_nhwc_reorder(shape, order, rewritten):
    """A transpose that swaps two blocks of trailing axes becomes (N, A, 1, B) -> (N, B, A, 1);
    the values are moved exactly as numpy moves them."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(ov.PartialShape([-1, *shape[1:]]), ov.Type.f32)
    y = ops.transpose(x, ops.constant(np.array(order, np.int64)))
    model = swap_blocks_as_nhwc(ov.Model([y], [x]))
    assert _orders(model) == ([[0, 3, 1, 2]] if rewritten else [order])
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(_compiled_f32(model, data), data.transpose(order))


@pytest.mark.parametrize("second_axes, numerator, fused", [
    ([1, 2, 3], 1.0, True),
    ([2, 3], 1.0, False),  # a variance over other axes than the mean's
    ([1, 2, 3], np.ones((1, 8, 1, 1)), False),  # a per-channel numerator, even of ones
])
def test_written_out_norms_run_as_one_mvn(second_axes, numerator, fused):
    """(x - mean) * (1 / sqrt(mean((x - mean)^2) + eps)), as the refiner's GroupNorm exports,
    becomes one MVN with the same values; near misses are left as they are."""
    import openvino as ov
    import openvino.opset13 as ops

    def axes(values):
        return ops.constant(np.array(values, np.int64))

    x = ops.parameter(ov.PartialShape([-1, 8, 4, 4]), ov.Type.f32)
    centred = ops.subtract(x, ops.reduce_mean(x, axes([1, 2, 3]), True))
    var = ops.reduce_mean(ops.multiply(centred, centred), axes(second_axes), True)
    inverse = ops.divide(ops.constant(np.asarray(numerator, np.float32)),
                         ops.sqrt(ops.add(var, ops.constant(np.float32(1e-5)))))
    model = norms_as_mvn(ov.Model([ops.multiply(centred, inverse)], [x]))
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("MVN") == int(fused) and ("Sqrt" in types) != fused
    data = np.random.default_rng(0).normal(3, 2, (2, 8, 4, 4)).astype(np.float32)
    mean = data.mean((1, 2, 3), keepdims=True)
    expected = (data - mean) / np.sqrt(((data - mean) ** 2).mean(tuple(second_axes),
                                                                  keepdims=True) + 1e-5)
    np.testing.assert_allclose(_compiled_f32(model, data), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kinks, counted", [
    ([-1.5, -0.25, 0.0, 0.0, 0.75, 2.0], True),  # sorted, a repeated kink included
    ([0.5, -1.0, 2.0], False),  # unsorted: Bucketize would not count them
])
def test_kink_counts_run_as_one_bucketize(kinks, counted):
    """sum(x > kinks) over the last axis, as the refiner's P-DyReLU pieces export, becomes one
    Bucketize with the same counts, values on the kinks included; unsorted kinks are left."""
    import openvino as ov
    import openvino.opset13 as ops

    table = np.array(kinks, np.float32)
    x = ops.parameter(ov.PartialShape([-1, 7, 1]), ov.Type.f32)
    above = ops.convert(ops.greater(x, ops.constant(table)), "f32")
    count = ops.reduce_sum(above, ops.constant(np.array([-1], np.int64)), False)
    model = kink_counts_as_bucketize(ov.Model([count], [x]))
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert ("Bucketize" in types) == counted and ("Greater" in types) != counted
    data = np.array([-3, -1.5, -0.25, 0, 0.75, 2, np.nextafter(np.float32(2), 0),
                     -1, 0.5, 2.5, 0.1, -0.3, 1e-30, 7], np.float32).reshape(2, 7, 1)
    np.testing.assert_array_equal(_compiled_f32(model, data), (data > table).sum(-1))


def test_bf16_rounding_is_to_nearest_even():
    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-12, -1.00390625, np.inf],
                      np.float32)
    np.testing.assert_array_equal(bf16_rounded(values),
                                  [1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -1.0, np.inf])


def test_row_lookups_in_constant_tables_are_made_in_bf16():
    """GatherND of whole rows of a constant f32 table becomes a Gather from its bf16 copy: the
    rows come back rounded to bf16 (to nearest, ties to even), nothing else changed."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    table = rng.standard_normal((9, 6)).astype(np.float32)
    index = ops.parameter(ov.PartialShape([-1, 5, 1]), ov.Type.i64)
    model = tables_in_bf16(ov.Model([ops.gather_nd(ops.constant(table), index)], [index]))
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert "GatherND" not in types and "Gather" in types
    rows = rng.integers(0, 9, (2, 5, 1))
    np.testing.assert_array_equal(_compiled_f32(model, rows), bf16_rounded(table)[rows[..., 0]])


def test_gate_passes_and_is_recorded_exactly(gated, golden_model_dir):
    out, report = gated
    gate = report.gate
    assert report.passed and not report.failures
    assert gate.cases[-2:] == SESSIONS and len(gate.cases) == 6 and gate.objects == 6
    assert gate.clicks == 4 * GATE_CLICKS + 2 * 20
    for embeddings in ("fp32", "bf16"):
        assert CLICK_THRESHOLDS.mean_mask_iou <= gate.mean_mask_iou[embeddings] < 1.0
        assert gate.min_mask_iou[embeddings] >= CLICK_THRESHOLDS.min_mask_iou
        assert gate.noc90_differs[embeddings] == 0
    record = read_manifest(out).click_precisions
    assert record["bf16"].gate == gate and record["bf16"].runtime == "openvino"
    assert record["fp32"].gate is None and record["fp32"].runtime == "onnxruntime"
    assert gate.thresholds == {"mean_mask_iou": 0.99, "min_mask_iou": 0.95, "noc90_differs": 0}
    # no graph file changed: the weights' identity (and the embedding cache's key) is the same
    assert read_manifest(out).model_id == read_manifest(golden_model_dir).model_id


def test_gate_trips_on_a_perturbed_decoder(golden_model_dir, tmp_path):
    """A decoder whose weights carry 5 % noise, run as the bf16 candidate: refused, its figures
    recorded, the fp32 export intact and bf16 not offered."""
    out = shutil.copytree(golden_model_dir, tmp_path / "model")
    graph = onnx.load(str(out / DECODER.filename))
    rng = np.random.default_rng(0)
    for tensor in graph.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) == 2:
            w = onnx.numpy_helper.to_array(tensor)
            noisy = w * (1 + 0.05 * rng.standard_normal(w.shape)).astype(np.float32)
            tensor.CopyFrom(onnx.numpy_helper.from_array(noisy, tensor.name))
    onnx.save(graph, str(tmp_path / "bad_decoder.onnx"))
    bad = {"decoder": open_click_graph(tmp_path / "bad_decoder.onnx", DECODER, "bf16", 2),
           "refiner": open_click_graph(out / REFINER.filename, REFINER, "bf16", 2)}
    with pytest.raises(GateError, match=r"bf16 decoder and refiner fail their click-replay "
                                        r"gate \(.*mask IoU 0\.\d+ < 0\.9"):
        add_click_precision(out, "bf16", clicks=GATE_CLICKS, threads=2, candidate=bad)
    record = read_manifest(out).click_precisions["bf16"]
    assert not record.offered and not record.gate.passed
    assert min(record.gate.min_mask_iou.values()) < CLICK_THRESHOLDS.min_mask_iou
    with pytest.raises(ModelDirError, match=r"offers click precisions \['fp32'\], not bf16"):
        open_model_dir(out, click_precision="bf16")
    open_model_dir(out)  # the fp32 export is intact


@pytest.mark.parametrize("name", SESSIONS)
def test_bf16_session_within_the_gate_figures_of_fp32(gated, load_golden, name):
    out, _ = gated
    data = load_golden(name)
    fp32 = FocSAMEngine.open(out, threads=2)
    bf16 = FocSAMEngine.open(out, threads=2, click_precision="bf16")
    assert isinstance(fp32.model.sessions["decoder"], ort.InferenceSession)
    assert isinstance(bf16.model.sessions["decoder"], OpenVinoDecoder)
    assert isinstance(bf16.model.sessions["refiner"], OpenVinoGraph)
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])
    masks, other = [], []
    session = replay(fp32, fp32.open_image(image), session_clicks(data),
                     observer=lambda c, r: masks.append(r.mask))
    replay(bf16, bf16.open_image(image), session_clicks(data),
           observer=lambda c, r: other.append(r.mask))
    agreement = [mask_agreement(a, b) for a, b in zip(masks, other)]
    assert len(agreement) == 20
    assert np.mean(agreement) >= CLICK_THRESHOLDS.mean_mask_iou
    assert min(agreement) >= CLICK_THRESHOLDS.min_mask_iou
    assert min(agreement) < 1.0  # bf16 really differs
    # fp32 is upstream's mask, to the golden session test's tolerance (unchanged by bf16)
    differing = np.count_nonzero(session.result.mask != data["mask_click20"].astype(bool))
    assert differing <= 0.0005 * session.result.mask.size


def test_replay_cache_keys_on_the_click_precision(gated, load_golden):
    out, _ = gated
    data = load_golden("session_1")
    image = np.ascontiguousarray(data["image_rgb"][..., ::-1])
    fp32 = FocSAMEngine.open(out, threads=2)
    bf16 = FocSAMEngine(open_model_dir(out, threads=2, click_precision="bf16"), fp32.cache)
    cache, prompts = ReplayCache(), session_clicks(data)[:3]
    a = cache.replay(fp32, fp32.open_image(image), prompts)
    b = cache.replay(bf16, bf16.open_image(image), prompts)
    assert b.cached_steps == 0 and bf16.encoder_runs == 0  # embeddings shared, states not
    assert not np.array_equal(a.result.low_res_logits, b.result.low_res_logits)


def test_evaluate_records_the_click_precision(gated, load_golden, tmp_path):
    import cv2

    out, _ = gated
    data = load_golden("session_1")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "images" / "s1.png"), data["image_rgb"][..., ::-1])
    cv2.imwrite(str(root / "masks" / "s1.png"), data["gt_mask"] * 255)
    engine = FocSAMEngine.open(out, threads=2, click_precision="bf16")
    settings = RunSettings("folder", "focsam", 123, "upstream", engine.model.model_id,
                           click_precision="bf16")
    evaluate(engine, open_dataset("folder", root), tmp_path / "res", settings)
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["click_precision"] == "bf16" and metrics["encoder_precision"] == "fp32"
    assert "bf16 decoder and refiner" in (tmp_path / "res" / "metrics.md").read_text()
    exact = RunSettings("folder", "focsam", 123, "upstream", engine.model.model_id)
    assert exact.click_precision == "fp32"  # exact unless asked
    with pytest.raises(ValueError, match="engine runs bf16"):
        evaluate(engine, open_dataset("folder", root), tmp_path / "res2", exact)


def test_unknown_click_precision_is_refused(golden_model_dir):
    with pytest.raises(ValueError, match="click precision must be one of"):
        open_model_dir(golden_model_dir, click_precision="fp16")


def test_missing_openvino_names_the_extra(gated, tmp_path):
    out, _ = gated
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from focsam_onnx.cli import app\n"
            f"app(['segment', {str(tmp_path / 'x.png')!r}, '--model', {str(out)!r}, "
            "'--clicks', '5,5,+', '--click-precision', 'bf16'])")
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((40, 40, 3), np.uint8))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("pip install 'focsam-onnx[openvino]'") and "decoder" in line


def test_export_without_openvino_is_refused_before_exporting(tmp_path):
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from focsam_onnx.cli import app\n"
            f"app(['export', '--random-init', 'tiny', '--out', {str(tmp_path / 'm')!r}, "
            "'--click-precision', 'bf16'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("pip install 'focsam-onnx[openvino]'")
    assert not (tmp_path / "m").exists()
