"""Reduced-precision encoders on the golden checkpoint: the gate's figures, bf16 sessions, the
cache, int8's excluded MatMuls, refusals and the missing-extra error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.loaded_model import open_model_dir, read_manifest
from focsam_onnx.engine.prompts import Click
from focsam_onnx.engine.sessions import ModelDirError
from focsam_onnx.evaluation.datasets import open_dataset
from focsam_onnx.evaluation.evaluate import RunSettings, evaluate
from focsam_onnx.evaluation.metrics import binary_iou
from focsam_onnx.export.encoder_precision import add_encoder_precisions
from focsam_onnx.export.quality_gate import THRESHOLDS, GateCase, GateError, Thresholds
from focsam_onnx.export.quantize import constant_batched_matmuls

pytestmark = pytest.mark.golden

SESSIONS = ("session_1", "session_2")
GATE_CLICKS = 5  # simulated clicks per synthetic scene (the export's default is 20)


def golden_cases(load_golden) -> list[GateCase]:
    """The golden sessions' images with their recorded 20-click sequences."""
    cases = []
    for name in SESSIONS:
        data = load_golden(name)
        clicks = tuple(Click(x=int(x), y=int(y), positive=bool(label))
                       for y, x, label in data["clicks_yx_label"])
        cases.append(GateCase(name, np.ascontiguousarray(data["image_rgb"][..., ::-1]),
                              clicks=clicks))
    return cases


@pytest.fixture(scope="module")
def gated(golden_model_dir, load_golden, tmp_path_factory):
    """The golden export with bf16 and int8 added: (model dir, gate reports)."""
    out = shutil.copytree(golden_model_dir, tmp_path_factory.mktemp("gated") / "model")
    reports = add_encoder_precisions(out, ["bf16", "int8"], golden_cases(load_golden),
                                     GATE_CLICKS, threads=2)
    return out, reports


@pytest.fixture(scope="module")
def session_image(load_golden) -> np.ndarray:
    return np.ascontiguousarray(load_golden("session_1")["image_rgb"][..., ::-1])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_gate_figures_pass_and_are_recorded_exactly(gated, precision):
    out, reports = gated
    report = reports[precision]
    assert report.cases[-2:] == SESSIONS and len(report.cases) == 6
    assert report.clicks == 4 * GATE_CLICKS + 2 * 20
    assert report.min_cosine >= THRESHOLDS.min_cosine
    assert report.mean_mask_iou >= THRESHOLDS.mean_mask_iou
    assert report.min_mask_iou >= THRESHOLDS.min_mask_iou
    assert 1e-3 < report.max_abs < 0.2  # reduced precision really ran, and stayed close
    record = read_manifest(out).encoder_precisions[precision]
    assert record.gate == report.figures()  # the manifest holds exactly what was computed
    assert record.gate.thresholds == {"min_cosine": 0.9999, "mean_mask_iou": 0.98,
                                      "min_mask_iou": 0.90}
    assert record.runtime == ("openvino" if precision == "bf16" else "onnxruntime")


def test_bf16_golden_embedding_within_the_recorded_cosine(gated, load_golden):
    out, reports = gated
    enc = load_golden("encoder")
    model = open_model_dir(out, threads=2, encoder_precision="bf16")
    embedding = model.encoder.run(enc["input"])
    assert model.encoder.bf16_share() == 1.0  # OpenVINO ran every MatMul/Conv in bf16
    assert THRESHOLDS.min_cosine <= cosine(embedding, enc["image_embeds"]) < 1.0
    # the gate's session images are among its cases, so its minimum is at most this image's
    session = open_model_dir(out, threads=2, encoder_precision="fp32")
    data = load_golden("session_1")
    image = FocSAMEngine(session).open_image(np.ascontiguousarray(data["image_rgb"][..., ::-1]))
    bf16_image = FocSAMEngine(model).open_image(np.ascontiguousarray(data["image_rgb"][..., ::-1]))
    assert reports["bf16"].min_cosine <= cosine(image.embeddings, bf16_image.embeddings)


def test_bf16_session_runs_end_to_end(gated, load_golden):
    out, _ = gated
    data = load_golden("session_1")
    engine = FocSAMEngine.open(out, threads=2, encoder_precision="bf16")
    session = ClickSession(engine, engine.open_image(data["image_rgb"][..., ::-1].copy()))
    for step, (y, x, label) in enumerate(data["clicks_yx_label"], 1):
        result = session.click(int(x), int(y), bool(label))
        assert result.decoded_on_refined == (step >= 2)
    final = data["mask_click20"].astype(bool)
    assert binary_iou(result.mask.astype(np.uint8), final.astype(np.uint8)) >= 0.98


def test_cache_never_mixes_precisions(gated, session_image, tmp_path):
    out, _ = gated
    cache = EmbeddingCache(cache_dir=tmp_path)
    fp32 = FocSAMEngine(open_model_dir(out, threads=2), cache)
    bf16 = FocSAMEngine(open_model_dir(out, threads=2, encoder_precision="bf16"), cache)
    a, b = fp32.open_image(session_image), bf16.open_image(session_image)
    assert fp32.encoder_runs == 1 and bf16.encoder_runs == 1 and not b.from_cache
    assert not np.array_equal(a.embeddings, b.embeddings)
    assert len(list(tmp_path.glob("*.bin"))) == 2
    for precision, expected in (("fp32", a.embeddings), ("bf16", b.embeddings)):
        engine = FocSAMEngine.open(out, threads=2, cache_dir=tmp_path,
                                   encoder_precision=precision)
        reopened = engine.open_image(session_image)
        assert reopened.from_cache and engine.encoder_runs == 0
        assert np.array_equal(reopened.embeddings, expected)


def test_evaluate_records_the_precision(gated, load_golden, tmp_path):
    import cv2

    out, _ = gated
    data = load_golden("session_1")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "images" / "s1.png"), data["image_rgb"][..., ::-1])
    cv2.imwrite(str(root / "masks" / "s1.png"), data["gt_mask"] * 255)
    engine = FocSAMEngine.open(out, threads=2, encoder_precision="bf16")
    settings = RunSettings("folder", "focsam", 123, "upstream", engine.model.model_id, "bf16")
    evaluate(engine, open_dataset("folder", root), tmp_path / "res", settings)
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["encoder_precision"] == "bf16" and metrics["samples"] == 1
    assert "bf16 encoder" in (tmp_path / "res" / "metrics.md").read_text()
    wrong = RunSettings("folder", "focsam", 123, "upstream", engine.model.model_id, "fp32")
    with pytest.raises(ValueError, match="engine runs bf16"):
        evaluate(engine, open_dataset("folder", root), tmp_path / "res2", wrong)


def test_int8_keeps_the_relative_position_matmuls_fp32(gated):
    out, _ = gated
    graph = onnx.load(str(out / "encoder.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger") == 4 * 4  # 4 blocks
    # per-channel on these fails in onnxruntime ("b zero point is not valid"): excluded
    assert len(constant_batched_matmuls(graph)) > 0
    assert all(n.op_type == "MatMul" for n in graph.graph.node
               if n.name in set(constant_batched_matmuls(graph)))


def test_precision_not_offered_is_refused(golden_model_dir):
    with pytest.raises(ModelDirError, match=r"offers encoder precisions \['fp32'\], not bf16: "
                                            r"export it with .*--encoder-precision bf16"):
        open_model_dir(golden_model_dir, encoder_precision="bf16")
    with pytest.raises(ValueError, match="must be one of"):
        open_model_dir(golden_model_dir, encoder_precision="fp16")


def test_failing_gate_is_refused_and_removed(golden_model_dir, tmp_path):
    out = shutil.copytree(golden_model_dir, tmp_path / "model")
    strict = Thresholds(min_cosine=0.9999999)
    with pytest.raises(GateError, match=r"int8 encoder fails its quality gate \(embedding "
                                        r"cosine 0\.99\d+ < 0\.9999999"):
        add_encoder_precisions(out, ["int8"], clicks=1, threads=2, thresholds=strict)
    assert not (out / "encoder.int8.onnx").exists()
    manifest = read_manifest(out)
    assert list(manifest.encoder_precisions) == ["fp32"]
    assert "encoder.int8.onnx" not in manifest.files
    open_model_dir(out)  # the fp32 export is intact


def test_missing_openvino_names_the_extra(gated, tmp_path):
    out, _ = gated
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from focsam_onnx.cli import app\n"
            f"app(['segment', {str(tmp_path / 'x.png')!r}, '--model', {str(out)!r}, "
            "'--clicks', '5,5,+', '--encoder-precision', 'bf16'])")
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((40, 40, 3), np.uint8))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("pip install 'focsam-onnx[openvino]'") and "OpenVINO" in line
