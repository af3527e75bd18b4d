"""The encoder per precision: onnxruntime for fp32, OpenVINO for bf16, both held to the spec."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from focsam_onnx.engine.encoder_runtime import open_encoder
from focsam_onnx.engine.graph_spec import ENCODER
from focsam_onnx.engine.sessions import ModelDirError

pytest.importorskip("openvino")


def test_bf16_encoder_runs_the_spec_graph_close_to_fp32(tiny_model_dir):
    x = np.random.default_rng(0).standard_normal(ENCODER.inputs[0].shape, np.float32)
    fp32 = open_encoder(tiny_model_dir, "fp32", 1).run(x)
    bf16 = open_encoder(tiny_model_dir, "bf16", 1)
    out = bf16.run(x)
    assert out.shape == ENCODER.outputs[0].shape and out.dtype == np.float32
    cosine = float((out * fp32).sum() / np.linalg.norm(out) / np.linalg.norm(fp32))
    assert 0.999 < cosine < 1.0 or bf16.bf16_share() == 0.0  # bf16 only where the CPU has it


def test_bf16_encoder_with_a_renamed_output_is_refused(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    graph = onnx.load(str(model_dir / "encoder.onnx"))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["renamed" if name == old else name for name in node.output]
    graph.graph.output[0].name = "renamed"
    onnx.save(graph, str(model_dir / "encoder.onnx"))
    with pytest.raises(ModelDirError, match="image_embeddings.*re-export"):
        open_encoder(model_dir, "bf16", 1)
