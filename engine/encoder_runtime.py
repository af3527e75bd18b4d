"""The image encoder at a chosen precision: onnxruntime for fp32 and int8, OpenVINO for bf16.

Only the encoder changes runtime; the decoder and the refiner always run fp32 on onnxruntime.
fp32 is the default and the upstream-exact one. bf16 runs the same `encoder.onnx` through
OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (onnxruntime's CPU provider has no x86 bf16
path); int8 runs `encoder.int8.onnx`, the dynamically quantized graph the exporter writes.
A reduced precision is offered only where the export's quality gate passed (see the manifest);
the precision table itself is part of the graph contract (`graph_spec.PRECISIONS`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from focsam_onnx.engine.graph_spec import ENCODER, get_precision
from focsam_onnx.engine.sessions import ModelDirError, graph_session
from focsam_onnx.errors import require

log = logging.getLogger(__name__)


class EncoderRuntime(Protocol):
    precision: str

    def run(self, network_input: np.ndarray) -> np.ndarray:
        """(1, 3, 1024, 1024) float32 preprocessed input -> (1, 256, 64, 64) float32."""
        ...


class OrtEncoder:
    """fp32 or int8: the graph in onnxruntime's CPU provider."""

    def __init__(self, session, precision: str):
        self.session = session
        self.precision = precision

    def run(self, network_input: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {ENCODER.inputs[0].name: network_input})
        return out


class OpenVinoEncoder:
    """bf16: OpenVINO compiles the fp32 ONNX graph and runs its matrix work in bfloat16."""

    def __init__(self, compiled, precision: str):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision

    def run(self, network_input: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(network_input, np.float32)})
        # The output tensor's memory is reused by the next inference: copy it out.
        return np.array(self.request.get_output_tensor(0).data, np.float32, copy=True)

    def bf16_share(self) -> float:
        """Fraction of the compiled graph's MatMul/Convolution nodes that execute in bf16.

        OpenVINO silently falls back to f32 on CPUs without bf16 instructions; this says
        which one ran.
        """
        heavy = [op for op in self.compiled.get_runtime_model().get_ops()
                 if op.get_rt_info()["layerType"].astype(str) in ("MatMul", "FullyConnected",
                                                                   "Convolution")]
        bf16 = [op for op in heavy if "bf16" in op.get_rt_info()["runtimePrecision"].astype(str)]
        return len(bf16) / len(heavy) if heavy else 0.0


def import_openvino(what: str = "the bf16 encoder (OpenVINO)"):
    """The `openvino` module, or a MissingExtra saying `what` needs the extra that installs it."""
    return require("openvino", what, "openvino")


def openvino_config(precision: str, threads: int) -> dict[str, str]:
    """Explicit precision (OpenVINO's CPU default is already bf16 where the CPU has it) and
    one latency stream of `threads` threads, like the onnxruntime sessions."""
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY"}


def open_encoder(model_dir: Path, precision: str, threads: int) -> EncoderRuntime:
    """The encoder of `model_dir` at `precision`, with `threads` threads."""
    spec = get_precision(precision)
    path = Path(model_dir) / spec.filename
    if spec.runtime == "onnxruntime":
        return OrtEncoder(graph_session(path, ENCODER, threads), precision)
    ov = import_openvino()
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", openvino_config(precision, threads))
    except Exception as err:  # OpenVINO raises its own RuntimeErrors from C++
        raise ModelDirError(f"OpenVINO cannot load {path}: {str(err).splitlines()[0]}") from None
    # A compiled port may carry several tensor names (its graph optimisations merge tensors:
    # ViT-H's unsimplified encoder output is also "div_1"), so the spec's name must be among them.
    ports = list(compiled.inputs), list(compiled.outputs)
    expected = ENCODER.input_names, ENCODER.output_names
    if any(len(have) != len(want) or any(n not in p.get_names() for p, n in zip(have, want))
           for have, want in zip(ports, expected)):
        names = [[sorted(p.get_names()) for p in side] for side in ports]
        raise ModelDirError(f"{path} has inputs/outputs {names}, expected {expected}; "
                            "re-export the model")
    encoder = OpenVinoEncoder(compiled, precision)
    log.debug("%s on OpenVINO %s: %.0f%% of MatMul/Conv nodes in bf16", path, ov.__version__,
              100 * encoder.bf16_share())
    return encoder
