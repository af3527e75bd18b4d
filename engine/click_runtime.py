"""The click graphs (decoder and refiner) at a chosen precision: onnxruntime fp32 or OpenVINO bf16.

fp32 is the default and the upstream-exact one: the graphs run in onnxruntime, exactly as
before this option existed. bf16 runs the same `decoder.onnx` and `refiner.onnx` through
OpenVINO with `INFERENCE_PRECISION_HINT=bf16` (onnxruntime's CPU provider has no x86 bf16
path), like the bf16 encoder. A bf16 click precision is offered only where the export's
click-replay gate passed (export/click_gate.py, recorded in the manifest).

What OpenVINO is given here:

* The decoder's attention order (folded or projected, export/decoder_rewrites.py) is an ONNX
  `If` on the prompt's token count. OpenVINO runs an `If` body as a separate dynamic-shape
  subgraph, outside the main graph's bf16 kernels and fusions, which cost the decoder about half
  its time; so the decoder is compiled twice, once with each condition fixed (OpenVINO then
  inlines the taken branch), and each call picks by its point count (`OpenVinoDecoder`). Both
  orders compute the same function, so the pick changes only the speed.
* OpenVINO's ONNX front end has no conversion for `DeformConv` (the refiner's opset-19 DCNv2);
  `deform_conv` writes it in OpenVINO's operators (see there).
* The image->token attentions' softmax runs over a handful of tokens for each of the 4096 image
  tokens and 8 heads: `softmax_long_rows` lays those rows along the image-token axis.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from focsam_onnx.config import FOLD_MAX_POINTS
from focsam_onnx.engine.encoder_runtime import import_openvino as import_openvino_for
from focsam_onnx.engine.encoder_runtime import openvino_config
from focsam_onnx.engine.graph_spec import DECODER, GraphSpec, get_click_precision
from focsam_onnx.engine.sessions import ModelDirError, graph_session

LONG_AXIS = 1024  # a static axis at least this long (the 4096 image tokens) takes the rows
TAPS = 9  # the DCN's 3x3 taps, k = 3a + b, row-major
SUBPIXEL = 2**16  # the deformable sampling's fixed-point positions (see deform_conv)


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


POINT_COORDS = DECODER.input_names[1]


class OpenVinoDecoder:
    """The decoder compiled once per attention order (the graph's `If`s fixed), each call run by
    the order its point count takes in the graph; run like an onnxruntime session."""

    def __init__(self, folded: OpenVinoGraph, projected: OpenVinoGraph):
        self.folded, self.projected = folded, projected

    def run(self, output_names, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        points = feeds[POINT_COORDS].shape[1]
        graph = self.folded if points <= FOLD_MAX_POINTS else self.projected
        return graph.run(output_names, feeds, run_options)


def _port(ports, name: str):
    for port in ports:
        if name in port.get_names():
            return port
    raise ModelDirError(f"the graph has outputs {[sorted(p.get_names()) for p in ports]}, "
                        f"not {name!r}; re-export the model")


def open_click_graph(path: Path, spec: GraphSpec, precision: str, threads: int):
    """The decoder or refiner at `path` at `precision`: an onnxruntime session (fp32), or for
    bf16 an `OpenVinoGraph` (an `OpenVinoDecoder` for a decoder that picks its attention order
    with `If`s); either is run as `graph.run(None, feeds)`."""
    runtime = get_click_precision(precision)
    if runtime == "onnxruntime":
        return graph_session(path, spec, threads)
    return open_openvino_graph(path, spec, openvino_config(precision, threads))


def open_openvino_graph(path: Path, spec: GraphSpec, config: dict[str, str]):
    """`path` compiled by OpenVINO with `config`; a decoder with `If`s (the attention order) as an
    `OpenVinoDecoder`."""
    ov = import_openvino()
    from openvino.frontend.onnx import ConversionExtension

    core = ov.Core()
    core.add_extension(ConversionExtension("DeformConv", deform_conv))
    core.add_extension(ConversionExtension("Softmax", softmax_long_rows))
    try:
        model = core.read_model(str(path))
        branches = any(op.get_type_name() == "If" for op in model.get_ordered_ops())
        if spec is not DECODER or not branches:
            return OpenVinoGraph(core.compile_model(model, "CPU", config), spec)
        # OpenVINO fuses the folded order's token->image attentions (MatMul, Softmax, MatMul
        # over the image tokens) into one "snippet" kernel, which does not use the CPU's matrix
        # units (AMX); unfused, the two products do. Measured on an Intel Xeon with AMX, vit_b,
        # 2 threads: the folded decoder 0.90x its time. The projected order gains nothing.
        folded_config = config | {"SNIPPETS_MODE": "DISABLE"}
        folded, projected = (OpenVinoGraph(core.compile_model(_taking(model, taken), "CPU",
                                                              settings), spec)
                             for taken, settings in ((True, folded_config), (False, config)))
    except Exception as err:  # OpenVINO raises its own RuntimeErrors from C++
        raise ModelDirError(f"OpenVINO cannot load {path}: {str(err).splitlines()[0]}") from None
    return OpenVinoDecoder(folded, projected)


def softmax_long_rows(node) -> list:
    """ONNX `Softmax` in OpenVINO operators, its rows laid along a long axis where they are short.

    A softmax over a short last axis (the image->token attention's few tokens, for each of the
    4096 image tokens and 8 heads, (1, 4096, 8, T) or (1, 8, 4096, T)) runs one short row at a
    time; swapping that axis with the long one (a transpose in, the same transpose out) lets
    OpenVINO's kernel run along the 4096 image tokens instead. The same function exactly (each
    row's maximum, exponentials and sum are the same numbers); measured on vit_b's decoder in
    bf16, 2 threads: 0.86x its time at 2 points, 0.90x at 6 and 0.86x at 21.
    Read as opset 13 and later define `Softmax` (over one axis); the exporter writes every softmax
    over the last axis, which older opsets define the same way.
    """
    import openvino.opset13 as ops

    x = node.get_input(0)
    shape = x.get_partial_shape()
    rank = shape.rank.get_length()
    axis = node.get_attribute("axis", -1) % rank

    def long(i: int) -> bool:
        return shape[i].is_static and shape[i].get_length() >= LONG_AXIS

    longer = [i for i in range(rank) if i != axis and long(i)]
    if axis != rank - 1 or long(axis) or not longer:
        return [ops.softmax(x, axis).output(0)]
    swap = list(range(rank))
    swap[axis], swap[longer[0]] = longer[0], axis
    swap = ops.constant(np.array(swap, np.int64))
    return [ops.transpose(ops.softmax(ops.transpose(x, swap), longer[0]), swap).output(0)]


def _taking(model, taken: bool):
    """A copy of `model` whose `If`s all take their then- (True) or else-branch (False)."""
    import openvino.opset13 as ops

    model = model.clone()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "If":
            op.input(0).replace_source_output(ops.constant(np.array(taken)).output(0))
    return model


def deform_conv(node) -> list:
    """ONNX `DeformConv` as written by export/custom_ops.py (3x3, stride 1, pads 1, one group and
    offset group, no bias, with a mask) in OpenVINO operators, for a static (C, H, W) map.

    Project, then sample: bilinear sampling and the modulation are linear in the sampled map, so
    tap k's term at a pixel is the same bilinear sample taken from the map already multiplied by
    tap k's weight, W_k x. One product with a constant weight projects every pixel for all 9
    taps, (N, HW, C) x (C, 9 O) (a FullyConnected layer, bf16 where asked); a second product
    applies the sampling matrix, whose row for output pixel p holds the 9 taps x 4 corners'
    bilinear weights times the taps' modulation. A corner outside the map weighs 0, which is
    exactly `models/deform_conv.py`'s rule (a sample at p <= -1 or p >= size is 0). Sampling
    first (im2col) puts a (N, C, 9, H, W) GridSample, which OpenVINO runs in f32 only, and its
    transpose before the product; gathering the projected rows instead moves 4x their bytes.
    Both cost more than the second product in bf16.
    """
    import openvino.opset13 as ops

    x, weight, offset, mask = (node.get_input(i) for i in (0, 1, 2, 4))
    channels, height, width = (d.get_length() for d in list(x.get_partial_shape())[1:])
    out_channels = weight.get_partial_shape()[0].get_length()
    pixels = height * width

    def const(value, dtype=np.float32):
        return ops.constant(np.asarray(value, dtype))

    def shape(*dims: int):  # 0 keeps the (dynamic) batch dim
        return const(dims, np.int64)

    # (N, HW, C) x (C, 9 O) -> rows (n, (q * 9 + k)) of (O,): pixel q projected by tap k's weight.
    tokens = ops.reshape(ops.transpose(x, const([0, 2, 3, 1], np.int64)),
                         shape(0, pixels, channels), special_zero=True)
    per_tap = ops.transpose(ops.reshape(weight, shape(out_channels, channels, TAPS),
                                        special_zero=False), const([2, 0, 1], np.int64))
    per_tap = ops.reshape(per_tap, shape(TAPS * out_channels, channels), special_zero=False)
    projected = ops.reshape(ops.matmul(tokens, per_tap, False, True),
                            shape(0, pixels * TAPS, out_channels), special_zero=True)

    # Sample positions (N, 9, H, W, 1) in int32 fixed point, 1/SUBPIXEL of a pixel: under a
    # bf16 hint OpenVINO would add the offsets to the base positions in bf16, whose 8 bits leave
    # 1/16 pixel at p = 8..16. An offset arrives in bf16 (or f32); times SUBPIXEL it rounds to an
    # integer exactly (bf16) or to 2**-16 pixel (f32), and the rest is integer arithmetic.
    tap = np.arange(TAPS)
    base_y = np.arange(height)[None, :, None] + (tap // 3 - 1)[:, None, None]  # (9, H, 1)
    base_x = np.arange(width)[None, None, :] + (tap % 3 - 1)[:, None, None]  # (9, 1, W)
    pairs = ops.reshape(offset, shape(0, TAPS, 2, height, width), special_zero=True)
    dy, dx = ops.split(pairs, const(2, np.int64), 2).outputs()  # (N, 9, 1, H, W) each
    below, right = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])  # the corners' offsets
    corners, fractions = [], []
    for delta, base, size, corner in ((dy, base_y, height, below), (dx, base_x, width, right)):
        # Any p <= -1 or p >= size samples 0: clamping beyond keeps the corners in range.
        reach = float((size + 2) * SUBPIXEL)
        fixed = ops.clamp(ops.multiply(ops.squeeze(delta, const([2], np.int64)),
                                       const(float(SUBPIXEL))), -reach, reach)
        fixed = ops.add(ops.convert(ops.round(fixed, "half_to_even"), "i32"),
                        const(base * SUBPIXEL, np.int32))
        # clamped to [-2, size + 1] pixels and shifted by 2, so that division floors
        fixed = ops.unsqueeze(ops.clamp(ops.add(fixed, const(2 * SUBPIXEL, np.int32)), 0.0,
                                        (size + 3.0) * SUBPIXEL), const(-1, np.int64))
        low = ops.divide(fixed, const(SUBPIXEL, np.int32))
        part = ops.subtract(fixed, ops.multiply(low, const(SUBPIXEL, np.int32)))
        fraction = ops.multiply(ops.convert(part, "f32"), const(1.0 / SUBPIXEL))  # [0, 1)
        # a corner at offset o along this axis weighs o f + (1 - o)(1 - f)
        fractions.append(ops.add(ops.multiply(const(corner), fraction),
                                 ops.multiply(const(1 - corner),
                                              ops.subtract(const(1.0), fraction))))
        corners.append(ops.add(low, const(corner - 2, np.int32)))  # (N, 9, H, W, 4)
    (cy, cx), (wy, wx) = corners, fractions

    def within(c, size: int):
        return ops.logical_and(ops.greater_equal(c, const(0, np.int32)),
                               ops.less_equal(c, const(size - 1, np.int32)))

    def clipped(c, size: int):
        return ops.minimum(ops.maximum(c, const(0, np.int32)), const(size - 1, np.int32))

    inside = ops.logical_and(within(cy, height), within(cx, width))
    modulation = ops.unsqueeze(mask, const(-1, np.int64))  # (N, 9, H, W, 1)
    weights = ops.multiply(ops.multiply(ops.multiply(wy, wx), modulation),
                           ops.convert(inside, "f32"))
    pixel = ops.add(ops.multiply(clipped(cy, height), const(width, np.int32)),
                    clipped(cx, width))
    column = ops.add(ops.multiply(pixel, const(TAPS, np.int32)),
                     const(tap.reshape(TAPS, 1, 1, 1), np.int32))
    # (N, H, W, 9, 4): an output pixel's 36 terms together, pixel-major like the output.
    order = const([0, 2, 3, 1, 4], np.int64)
    column = ops.reshape(ops.transpose(column, order), shape(0, pixels, TAPS * 4),
                         special_zero=True)
    weights = ops.reshape(ops.transpose(weights, order), shape(0, pixels, TAPS * 4),
                          special_zero=True)
    # The sampling matrix (N, HW, HW * 9): row p holds its 36 weights at columns q * 9 + k
    # (summed where clipped corners coincide), so that sampling is one product in bf16. Its
    # zeros are padded out from a (N, HW, 1) slice: OpenVINO's Broadcast made the 4-window vit_b
    # refiner 220 ms against 166 ms with Pad (quiet machine, bf16).
    zeros = ops.multiply(ops.slice(weights, const([0], np.int64), const([1], np.int64),
                                   const([1], np.int64), const([2], np.int64)), const(0.0))
    zeros = ops.pad(zeros, const([0, 0, 0], np.int64), const([0, 0, pixels * TAPS - 1], np.int64),
                    "constant", const(0.0))
    sampling = ops.scatter_elements_update(zeros, column, weights, const(2, np.int64), "sum")
    out = ops.matmul(sampling, projected, False, False)  # (N, HW, O)
    out = ops.transpose(out, const([0, 2, 1], np.int64))
    out = ops.reshape(out, shape(0, out_channels, height, width), special_zero=True)
    return [out.output(0)]
