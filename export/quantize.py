"""encoder.int8.onnx: onnxruntime dynamic quantization of the encoder's weight MatMuls.

`quant_pre_process` (shape inference and onnxruntime's graph optimisation) first, then
`quantize_dynamic` with int8 weights, per output channel, on MatMuls whose second input is a
weight (`MatMulConstBOnly`): attention's activation-by-activation products stay fp32.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from focsam_onnx.engine.graph_spec import PRECISIONS

log = logging.getLogger(__name__)

TWO_GB = 2**31


@dataclass(frozen=True)
class QuantizeReport:
    file: str
    quantized: int  # MatMuls given int8 weights
    excluded: tuple[str, ...]  # MatMuls kept fp32 (see below)


def constant_batched_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose constant second input has rank 3: the relative-position tables.

    The decomposed relative position term (einsum "bhwc,hkc->bhwk") becomes a batched MatMul
    of the queries with a constant (k_h, C, k_h) slice of `rel_pos_h`/`rel_pos_w`. Per-channel
    quantization gives it a 1-D (k_h,) zero point, but onnxruntime's MatMulInteger accepts a
    1-D zero point only for a 2-D weight and fails at run time with "MatmulInteger : b zero
    point is not valid". These products are tiny (k_h = 14 or 127 columns), so they stay fp32:
    nothing is lost in speed, and the attention bias keeps full precision.
    """
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and ranks.get(n.input[1], 2) != 2]


def quantize_encoder(model_dir: Path) -> QuantizeReport:
    """Write `model_dir`/encoder.int8.onnx from `model_dir`/encoder.onnx."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_dir = Path(model_dir)
    source = model_dir / PRECISIONS["fp32"].filename
    out = model_dir / PRECISIONS["int8"].filename
    large = sum(p.stat().st_size for p in model_dir.glob(source.name + "*")) >= TWO_GB
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference is for transformer graphs with dynamic axes; ours are static.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True,
                          save_as_external_data=large, all_tensors_to_one_file=True)
        excluded = constant_batched_matmuls(onnx.load(str(prepared), load_external_data=False))
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                         # int8 weights are a quarter of fp32's: ViT-H's 2.5 GB encoder
                         # quantizes to ~0.7 GB, one file that the manifest hashes whole.
                         use_external_data_format=False,
                         extra_options={"MatMulConstBOnly": True})
    quantized = sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
                    for n in onnx.load(str(out), load_external_data=False).graph.node)
    log.info("%s: %d MatMuls int8, %d kept fp32 (relative-position tables)",
             out.name, quantized, len(excluded))
    return QuantizeReport(out.name, quantized, tuple(excluded))
