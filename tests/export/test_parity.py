"""The parity gate and the spec check hold a graph's whole contract (random-init tiny export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from focsam_onnx.config import get_variant
from focsam_onnx.engine.graph_spec import DECODER
from focsam_onnx.engine.sessions import ModelDirError, graph_session
from focsam_onnx.export.parity import ParityError, _output_diff, check_parity
from focsam_onnx.export.wrappers import GraphExport, graph_exports
from focsam_onnx.models.focsam import build_model


@pytest.fixture(scope="module")
def decoder() -> GraphExport:
    """The decoder export of the same weights as `tiny_model_dir` (random init, seed 0)."""
    model = build_model(get_variant("tiny"), seed=0)
    return next(g for g in graph_exports(model) if g.spec.name == "decoder")


def _sliced_output(src: Path, dst: Path, output: str, rows: int) -> None:
    """Copy of the graph whose `output` keeps only its first `rows` rows (axis 2)."""
    model = onnx.load(str(src))
    inner = f"{output}_before_slice"
    for node in model.graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
    consts = [helper.make_tensor(n, onnx.TensorProto.INT64, [1], [v])
              for n, v in (("slice_starts", 0), ("slice_ends", rows), ("slice_axes", 2))]
    model.graph.initializer.extend(consts)
    model.graph.node.append(helper.make_node(
        "Slice", [inner, "slice_starts", "slice_ends", "slice_axes"], [output]))
    declared = next(o for o in model.graph.output if o.name == output)
    declared.type.tensor_type.shape.dim[2].dim_value = rows
    onnx.save(model, str(dst))


def test_the_export_passes_its_gate(tiny_model_dir, decoder):
    diffs = check_parity(tiny_model_dir / "decoder.onnx", DECODER, decoder.module, decoder.cases)
    assert list(diffs) == DECODER.output_names
    assert all(diffs[o.name] <= o.tolerance for o in DECODER.outputs)


def test_gate_trips_on_an_output_of_the_wrong_shape(tiny_model_dir, decoder, tmp_path):
    tampered = tmp_path / "decoder.onnx"
    _sliced_output(tiny_model_dir / "decoder.onnx", tampered, "low_res_masks", rows=128)
    with pytest.raises(ParityError, match=r"decoder output 'low_res_masks' has size 128 on "
                                          r"axis 2, expected 256"):
        check_parity(tampered, DECODER, decoder.module, decoder.cases)


def _double_input(src: Path, dst: Path, name: str) -> None:
    """Copy of the graph whose input `name` is float64, cast to float32 inside."""
    model = onnx.load(str(src))
    inner = f"{name}_as_float"
    for node in model.graph.node:
        node.input[:] = [inner if i == name else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", [name], [inner],
                                                to=onnx.TensorProto.FLOAT))
    next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type = \
        onnx.TensorProto.DOUBLE
    onnx.save(model, str(dst))


class _Truncated(torch.nn.Module):
    """The decoder module with its first output cut to `rows` rows, or its last output dropped."""

    def __init__(self, module: torch.nn.Module, rows: int | None = None):
        super().__init__()
        self.module, self.rows = module, rows

    def forward(self, *inputs):
        outputs = self.module(*inputs)
        if self.rows is None:
            return outputs[:-1]
        return (outputs[0][:, :, :self.rows], *outputs[1:])


def test_gate_compares_shapes_with_torch(tiny_model_dir, decoder):
    with pytest.raises(ParityError, match=r"output 'low_res_masks' has shape \[1, 1, 256, 256\], "
                                          r"torch gives \[1, 1, 100, 256\]"):
        check_parity(tiny_model_dir / "decoder.onnx", DECODER, _Truncated(decoder.module, 100),
                     decoder.cases)


def test_gate_compares_the_number_of_outputs(tiny_model_dir, decoder):
    with pytest.raises(ParityError, match="torch gives 2 outputs, onnxruntime 3, the spec 3"):
        check_parity(tiny_model_dir / "decoder.onnx", DECODER, _Truncated(decoder.module),
                     decoder.cases)


def test_opening_a_graph_holds_it_against_the_spec(tiny_model_dir, tmp_path):
    tampered = tmp_path / "decoder.onnx"
    _sliced_output(tiny_model_dir / "decoder.onnx", tampered, "low_res_masks", rows=64)
    with pytest.raises(ModelDirError, match=r"decoder output 'low_res_masks' has size 64 on "
                                            r"axis 2, expected 256.*re-export"):
        graph_session(tampered, DECODER, threads=1)
    _double_input(tiny_model_dir / "decoder.onnx", tampered, "mask_input")
    with pytest.raises(ModelDirError, match=r"decoder input 'mask_input' has type tensor\(double"
                                            r"\), expected tensor\(float\)"):
        graph_session(tampered, DECODER, threads=1)


def test_the_gate_holds_larger_values_to_the_same_relative_tolerance():
    """A trained model's logits are tens of times the golden fixture's (0.42 at most), and so is
    their float32 rounding: the tolerance is the golden one up to that scale, in proportion
    above it, never looser below."""
    logits = DECODER.outputs[0]
    assert logits.allowed_diff(0.1) == logits.allowed_diff(0.42) == 1e-5
    assert logits.allowed_diff(4.2) == pytest.approx(1e-4)
    want = np.linspace(-11, 11, 256 * 256, dtype=np.float32).reshape(1, 1, 256, 256)
    assert _output_diff(logits, want, want + np.float32(1e-4), "case") == pytest.approx(1e-4, 1e-2)
    with pytest.raises(ParityError, match=r"differs from torch by 0\.0003 \(tolerance 0\.000262"):
        _output_diff(logits, want, want + np.float32(3e-4), "case")
    small = want / 100
    with pytest.raises(ParityError, match="tolerance 1e-05"):
        _output_diff(logits, small, small + np.float32(2e-5), "case")
