"""The click graphs (decoder and refiner) at a chosen precision: onnxruntime fp32 or OpenVINO bf16.

fp32 is the default and the upstream-exact one: the graphs run in onnxruntime, exactly as
before this option existed. bf16 runs the same `decoder.onnx` and `refiner.onnx` through
OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (onnxruntime's CPU provider has no x86 bf16
path), like the bf16 encoder. A bf16 click precision is offered only where the export's
click-replay gate passed (export/click_gate.py, recorded in the manifest).

OpenVINO's ONNX front end has no conversion for `DeformConv` (the refiner's opset-19 DCNv2), so
it is given one here (`deform_conv`): the same sampling as `models/deform_conv.py` written in
OpenVINO's operators (GridSample with zero padding and aligned corners, the DCN validity test,
the modulation mask, one matrix product with the constant weight). In f32 it is exact up to
float rounding (a test holds it to the golden refiner's tolerance); written as
columns x weight^T the product becomes a FullyConnected layer, which OpenVINO runs in bf16
(OpenVINO's own DeformableConvolution would keep its 151 M multiply-adds per window in f32).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from focsam_onnx.engine.encoder_runtime import import_openvino as import_openvino_for
from focsam_onnx.engine.encoder_runtime import openvino_config
from focsam_onnx.engine.graph_spec import GraphSpec, get_click_precision
from focsam_onnx.engine.sessions import ModelDirError, graph_session

TAPS = 9  # the DCN's 3x3 taps, k = 3a + b, row-major


def import_openvino():
    """The `openvino` module, or a MissingExtra naming the extra that installs it."""
    return import_openvino_for("the bf16 decoder and refiner (OpenVINO)")


class OpenVinoGraph:
    """A click graph compiled by OpenVINO, run like an onnxruntime session (`run(None, feeds)`
    -> the outputs in the spec's order, as fresh arrays)."""

    def __init__(self, compiled, spec: GraphSpec):
        self.compiled = compiled
        self.outputs = [_port(compiled.outputs, name) for name in spec.output_names]
        # An infer request is not thread-safe: one per calling thread (serve's click workers
        # run several sessions at once, as they do on one onnxruntime session).
        self._local = threading.local()

    def run(self, output_names, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        # The output tensors' memory is reused by the next inference: copy them out.
        return [np.array(request.get_tensor(port).data, np.float32, copy=True)
                for port in self.outputs]


def _port(ports, name: str):
    for port in ports:
        if name in port.get_names():
            return port
    raise ModelDirError(f"the graph has outputs {[sorted(p.get_names()) for p in ports]}, "
                        f"not {name!r}; re-export the model")


def open_click_graph(path: Path, spec: GraphSpec, precision: str, threads: int):
    """The decoder or refiner at `path` at `precision`: an onnxruntime session (fp32) or an
    `OpenVinoGraph` (bf16), either run as `graph.run(None, feeds)`."""
    runtime = get_click_precision(precision)
    if runtime == "onnxruntime":
        return graph_session(path, spec, threads)
    ov = import_openvino()
    from openvino.frontend.onnx import ConversionExtension

    core = ov.Core()
    core.add_extension(ConversionExtension("DeformConv", deform_conv))
    try:
        compiled = core.compile_model(str(path), "CPU", openvino_config(precision, threads))
    except Exception as err:  # OpenVINO raises its own RuntimeErrors from C++
        raise ModelDirError(f"OpenVINO cannot load {path}: {str(err).splitlines()[0]}") from None
    return OpenVinoGraph(compiled, spec)


def deform_conv(node) -> list:
    """ONNX `DeformConv` as written by export/custom_ops.py (3x3, stride 1, pads 1, one group and
    offset group, no bias, with a mask) in OpenVINO operators, for a static (C, H, W) map."""
    import openvino.opset13 as ops

    x, weight, offset, mask = (node.get_input(i) for i in (0, 1, 2, 4))
    channels, height, width = (d.get_length() for d in list(x.get_partial_shape())[1:])
    out_channels = weight.get_partial_shape()[0].get_length()

    def const(value, dtype=np.float32):
        return ops.constant(np.asarray(value, dtype))

    def shape(*dims: int):  # 0 keeps the (dynamic) batch dim
        return const(dims, np.int64)

    tap = np.arange(TAPS)
    base_y = np.arange(height)[None, :, None] + (tap // 3 - 1)[:, None, None]  # (9, H, 1)
    base_x = np.arange(width)[None, None, :] + (tap % 3 - 1)[:, None, None]  # (9, 1, W)
    pairs = ops.reshape(offset, shape(0, TAPS, 2, height, width), special_zero=True)
    dy, dx = ops.split(pairs, const(2, np.int64), 2).outputs()  # (N, 9, 1, H, W) each
    py = ops.add(ops.squeeze(dy, const([2], np.int64)), const(base_y))  # (N, 9, H, W)
    px = ops.add(ops.squeeze(dx, const([2], np.int64)), const(base_x))
    # align_corners=True maps pixel p to 2p / (size - 1) - 1, as the torch operator does.
    gy = ops.subtract(ops.multiply(py, const(2.0 / (height - 1))), const(1.0))
    gx = ops.subtract(ops.multiply(px, const(2.0 / (width - 1))), const(1.0))
    grid = ops.concat([ops.unsqueeze(gx, const(-1, np.int64)),
                       ops.unsqueeze(gy, const(-1, np.int64))], -1)
    grid = ops.reshape(grid, shape(0, TAPS * height, width, 2), special_zero=True)
    samples = ops.grid_sample(x, grid, {"align_corners": True, "mode": "bilinear",
                                        "padding_mode": "zeros"})  # (N, C, 9H, W)
    # The DCN validity test, explicit as in the torch operator: a sample at p <= -1 or p >= size
    # is exactly 0.
    valid = ops.logical_and(
        ops.logical_and(ops.greater(py, const(-1.0)), ops.less(py, const(float(height)))),
        ops.logical_and(ops.greater(px, const(-1.0)), ops.less(px, const(float(width)))))
    modulation = ops.multiply(mask, ops.convert(valid, "f32"))  # (N, 9, H, W)
    samples = ops.reshape(samples, shape(0, channels, TAPS, height, width), special_zero=True)
    samples = ops.multiply(samples, ops.unsqueeze(modulation, const(1, np.int64)))
    # columns (N, H*W, C*9) x weight^T: a constant right operand, i.e. a FullyConnected layer.
    columns = ops.transpose(samples, const([0, 3, 4, 1, 2], np.int64))
    columns = ops.reshape(columns, shape(0, height * width, channels * TAPS), special_zero=True)
    flat_weight = ops.reshape(weight, shape(out_channels, channels * TAPS), special_zero=False)
    out = ops.transpose(ops.matmul(columns, flat_weight, False, True), const([0, 2, 1], np.int64))
    out = ops.reshape(out, shape(0, out_channels, height, width), special_zero=True)
    return [out.output(0)]
