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
* Once read, rewrites of the model, each the same function: transposes between token- and
  channel-major maps as OpenVINO's fast layout reorder (`swap_blocks_as_nhwc`), the refiner's
  written-out GroupNorm as one MVN (`norms_as_mvn`), the P-DyReLU's piece index as one
  Bucketize (`kink_counts_as_bucketize`), and for bf16 its table lookups from a bf16-rounded
  table (`tables_in_bf16`, bit-identical outputs).
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
        # share_inputs: OpenVINO reads the arrays in place (the call is synchronous) instead of
        # copying them first, the 4 MB embeddings included.
        request.infer({k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()},
                      share_inputs=True)
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
        model = kink_counts_as_bucketize(norms_as_mvn(swap_blocks_as_nhwc(
            core.read_model(str(path)))))
        if config["INFERENCE_PRECISION_HINT"] == "bf16":
            model = tables_in_bf16(model)
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


def swap_blocks_as_nhwc(model):
    """`model` with each Transpose that swaps two blocks of trailing axes written as the one
    that OpenVINO's CPU plugin runs fast: (N, A, 1, B) -> (N, B, A, 1), the NHWC-to-NCHW reorder.

    The refiner and decoder move maps between token-major (N, HW, C) and channel-major
    (N, C, HW) with [0, 2, 1] transposes (and [0, 2, 3, 1] or [0, 3, 1, 2] on 4-D maps); OpenVINO
    runs those with a generic kernel, about 3x slower than its layout reorder (a 4096 x 256 f32
    map: 2.9 ms against 0.9). The same values moved, so the same function exactly.
    """
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        if op.get_type_name() != "Transpose":
            continue
        order, x = op.input_value(1).get_node(), op.input_value(0)
        shape = x.get_partial_shape()
        if order.get_type_name() != "Constant" or shape.rank.is_dynamic:
            continue
        split = _block_swap(list(order.get_data()))
        if split is None or not shape[1:].is_static:
            continue
        dims = [d.get_length() for d in shape[1:]]
        a, b = int(np.prod(dims[:split - 1])), int(np.prod(dims[split - 1:]))
        out_dims = [0] + dims[split - 1:] + dims[:split - 1]  # 0 keeps the batch dim
        y = ops.reshape(x, ops.constant(np.array([0, a, 1, b], np.int64)), special_zero=True)
        y = ops.transpose(y, ops.constant(np.array([0, 3, 1, 2], np.int64)))
        y = ops.reshape(y, ops.constant(np.array(out_dims, np.int64)), special_zero=True)
        op.output(0).replace(y.output(0))
    return model


def norms_as_mvn(model):
    """`model` with each normalisation written out in elementary operators,
    (x - mean) * (1 / sqrt(mean((x - mean)^2) + eps)) (the refiner's GroupNorm with one group),
    as one OpenVINO MVN: its element-wise pieces otherwise run apart, and in f32 under a bf16
    hint (about 9 % of the 4-window vit_b refiner). The same function; MVN accumulates in f32.
    """
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        found = _written_out_norm(op) if op.get_type_name() == "Multiply" else None
        if found is not None:
            x, axes, eps = found
            op.output(0).replace(ops.mvn(x, axes, True, eps, "inside_sqrt").output(0))
    return model


def _producer(output, kind: str):
    """The node of OpenVINO type `kind` that gives `output`, else None (for pattern matchers)."""
    n = output.get_node()
    return n if n.get_type_name() == kind else None


def _constant(output) -> np.ndarray | None:
    """The value of `output` if a Constant gives it, else None."""
    n = _producer(output, "Constant")
    return None if n is None else n.get_data()


def _written_out_norm(mul):
    """(x, axes, eps) where `mul` is (x - mean(x)) * (1 / sqrt(mean((x - mean(x))^2) + eps)),
    the means over the same axes kept; else None."""
    def mean_over(output):  # (input, axes output) of a ReduceMean that keeps its dims
        n = _producer(output, "ReduceMean")
        if n is None or not n.get_attributes()["keep_dims"] or _constant(n.input_value(1)) is None:
            return None
        return n.input_value(0), n.input_value(1)

    def is_one(output) -> bool:
        value = _constant(output)
        return value is not None and value.size == 1 and float(value.reshape(())) == 1.0

    for centred, inverse in (mul.input_values(), reversed(mul.input_values())):
        sub, div = _producer(centred, "Subtract"), _producer(inverse, "Divide")
        if sub is None or div is None or not is_one(div.input_value(0)):
            continue
        x, mean = sub.input_values()
        first = mean_over(mean)
        sqrt = _producer(div.input_value(1), "Sqrt")
        add = None if sqrt is None else _producer(sqrt.input_value(0), "Add")
        if first is None or add is None or first[0] != x:
            continue
        second, eps = mean_over(add.input_value(0)), _constant(add.input_value(1))
        square = None if second is None else _producer(second[0], "Multiply")
        if (eps is None or eps.size != 1 or square is None
                or list(square.input_values()) != [centred, centred]
                or not np.array_equal(_constant(first[1]), _constant(second[1]))):
            continue
        return x, first[1], float(eps.reshape(()))
    return None


def kink_counts_as_bucketize(model):
    """`model` with each count of the sorted constants below a value, sum(x > c) over the last
    axis of a comparison against a 1-D constant c (the refiner's P-DyReLU pieces, export/
    refiner_rewrites.py), as one Bucketize: the comparison otherwise fills an (N, T, kinks)
    boolean tensor, converts it and sums it (1.5 % of the 4-window vit_b refiner in bf16). The
    same count: with a right bound, Bucketize's bucket is the number of boundaries below x.
    """
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        found = _kink_count(op) if op.get_type_name() == "ReduceSum" else None
        if found is not None:
            x, kinks = found
            buckets = ops.bucketize(x, kinks, "i32", with_right_bound=True)
            count = ops.squeeze(buckets, ops.constant(np.int64(-1)))
            op.output(0).replace(ops.convert(count, op.get_output_element_type(0)).output(0))
    return model


def _kink_count(reduce_sum):
    """(x, kinks) where `reduce_sum` is sum(convert(x > kinks)) over the last axis, x (..., 1)
    and kinks a sorted 1-D constant; else None."""
    convert = _producer(reduce_sum.input_value(0), "Convert")
    greater = None if convert is None else _producer(convert.input_value(0), "Greater")
    axes = _constant(reduce_sum.input_value(1))
    if greater is None or axes is None or reduce_sum.get_attributes()["keep_dims"]:
        return None
    x, kinks = greater.input_values()
    shape, values = x.get_partial_shape(), _constant(kinks)
    rank = shape.rank.get_length() if shape.rank.is_static else 0
    if (values is None or values.ndim != 1 or np.any(np.diff(values) < 0) or rank < 2
            or not shape[rank - 1].is_static or shape[rank - 1].get_length() != 1
            or [a % rank for a in np.atleast_1d(axes)] != [rank - 1]):
        return None
    return x, kinks


def tables_in_bf16(model):
    """`model` with each row lookup in a constant f32 table (GatherND with one index per row)
    made in a copy of the table rounded to bf16. OpenVINO runs GatherND in f32 only, with its
    reference kernel, and then rounds the rows for the bf16 products that take them (the
    refiner's P-DyReLU slopes and intercepts: 4 % of its 4-window vit_b time in bf16). For bf16
    graphs only (an f32 consumer would lose the table's precision); on the vit_b refiner the
    outputs are bit-identical with and without it (1, 4 and 16 windows).
    """
    import openvino as ov
    import openvino.opset13 as ops

    F32 = ov.Type.f32
    for op in model.get_ordered_ops():
        if op.get_type_name() != "GatherND" or op.get_attributes()["batch_dims"] != 0:
            continue
        table, index = op.input_values()
        values, depth = _constant(table), index.get_partial_shape()[-1]
        if (values is None or table.get_element_type() != F32
                or not depth.is_static or depth.get_length() != 1):
            continue
        # OpenVINO folds a Convert to bf16 by truncating: round first, then it is exact.
        bf16 = ops.convert(ops.constant(bf16_rounded(values)), "bf16")
        row = ops.squeeze(index, ops.constant(np.int64(-1)))
        rows = ops.gather(bf16, row, ops.constant(np.int64(0)))
        op.output(0).replace(ops.convert(rows, "f32").output(0))
    return model


def bf16_rounded(values: np.ndarray) -> np.ndarray:
    """float32 `values` rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return np.where(np.isfinite(values), rounded.astype(np.uint32).view(np.float32), values)


def _block_swap(order: list[int]) -> int | None:
    """k where `order` is [0, k, ..., rank - 1, 1, ..., k - 1] (axes 1..k-1 and k.. swapped), or
    None."""
    rank = len(order)
    if rank < 3 or order[0] != 0:
        return None
    split = order[1]
    if split > 1 and order == [0, *range(split, rank), *range(1, split)]:
        return split
    return None


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
    taps, P = (N, HW, C) x (C, 9 O), read as (N, 9 HW, O) with row q 9 + k; a second applies the
    sampling matrix S (N, 9 HW, HW), whose column for output pixel p holds the 9 taps x 4
    corners' bilinear weights times the taps' modulation, at rows q 9 + k: out = P^T S, the
    (N, O, HW) map channel-major as DeformConv returns it (OpenVINO reads P transposed inside the
    product). A corner outside the map weighs 0, which is exactly `models/deform_conv.py`'s rule
    (a sample at p <= -1 or p >= size is 0). Sampling first (im2col) puts a (N, C, 9, H, W)
    GridSample, which OpenVINO runs in f32 only, and its transpose before the product; gathering
    the projected rows instead moves 4x their bytes.

    The positions' arithmetic runs on (N, 9, 4, HW) tensors, the pixels last: OpenVINO's
    element-wise kernels run along the last axis, which a (..., 9, 4) layout left 4 wide (with
    the map's transposes in and out, 0.84x the 4-window vit_b refine click's time in bf16).
    """
    import openvino.opset13 as ops

    x, weight, offset, mask = (node.get_input(i) for i in (0, 1, 2, 4))
    channels, height, width = (d.get_length() for d in list(x.get_partial_shape())[1:])
    out_channels = weight.get_partial_shape()[0].get_length()
    pixels = height * width
    if min(height, width) < 2:  # see `wrapped`
        raise ValueError(f"DeformConv on a {height}x{width} map: at least 2x2 is needed here")

    def const(value, dtype=np.float32):
        return ops.constant(np.asarray(value, dtype))

    def shape(*dims: int):  # 0 keeps the (dynamic) batch dim
        return const(dims, np.int64)

    # (N, HW, C) x (C, 9 O) -> rows (n, (q * 9 + k)) of (O,): pixel q projected by tap k's weight.
    per_tap = ops.transpose(ops.reshape(weight, shape(out_channels, channels, TAPS),
                                        special_zero=False), const([2, 0, 1], np.int64))
    per_tap = ops.reshape(per_tap, shape(TAPS * out_channels, channels), special_zero=False)
    projected = ops.reshape(ops.matmul(_token_major(x, channels, pixels), per_tap, False, True),
                            shape(0, pixels * TAPS, out_channels), special_zero=True)

    # Sample positions (N, 9, 1, HW) in int32 fixed point, 1/SUBPIXEL of a pixel: under a
    # bf16 hint OpenVINO would add the offsets to the base positions in bf16, whose 8 bits leave
    # 1/16 pixel at p = 8..16. An offset arrives in bf16 (or f32); times SUBPIXEL it rounds to an
    # integer exactly (bf16) or to 2**-16 pixel (f32), and the rest is integer arithmetic.
    tap = np.arange(TAPS)[:, None, None]
    grid_y, grid_x = np.divmod(np.arange(pixels), width)
    base_y = (grid_y + tap // 3 - 1).reshape(1, TAPS, 1, pixels)
    base_x = (grid_x + tap % 3 - 1).reshape(1, TAPS, 1, pixels)
    pairs = ops.reshape(offset, shape(0, TAPS, 2, pixels), special_zero=True)
    dy, dx = ops.split(pairs, const(2, np.int64), 2).outputs()  # (N, 9, 1, HW) each
    below, right = (np.array(c).reshape(1, 1, 4, 1) for c in ([0, 0, 1, 1], [0, 1, 0, 1]))
    corners, fractions = [], []
    for delta, base, size, corner in ((dy, base_y, height, below), (dx, base_x, width, right)):
        # Any p <= -1 or p >= size samples 0: clamping beyond keeps the corners in range.
        reach = float((size + 2) * SUBPIXEL)
        fixed = ops.clamp(ops.multiply(delta, const(float(SUBPIXEL))), -reach, reach)
        fixed = ops.add(ops.convert(ops.round(fixed, "half_to_even"), "i32"),
                        const(base * SUBPIXEL, np.int32))
        # clamped to [-2, size + 1] pixels and shifted by 2, so that division floors
        fixed = ops.clamp(ops.add(fixed, const(2 * SUBPIXEL, np.int32)), 0.0,
                          (size + 3.0) * SUBPIXEL)
        low = ops.divide(fixed, const(SUBPIXEL, np.int32))
        part = ops.subtract(fixed, ops.multiply(low, const(SUBPIXEL, np.int32)))
        fraction = ops.multiply(ops.convert(part, "f32"), const(1.0 / SUBPIXEL))  # [0, 1)
        # a corner at offset o along this axis weighs o f + (1 - o)(1 - f)
        fractions.append(ops.add(ops.multiply(const(corner), fraction),
                                 ops.multiply(const(1 - corner),
                                              ops.subtract(const(1.0), fraction))))
        corners.append(ops.add(low, const(corner - 2, np.int32)))  # (N, 9, 4, HW)
    (cy, cx), (wy, wx) = corners, fractions

    def within(c, size: int):
        return ops.logical_and(ops.greater_equal(c, const(0, np.int32)),
                               ops.less_equal(c, const(size - 1, np.int32)))

    def wrapped(c, size: int):  # corners lie in [-2, size + 2]
        return ops.floor_mod(ops.add(c, const(size, np.int32)), const(size, np.int32))

    inside = ops.logical_and(within(cy, height), within(cx, width))
    modulation = ops.reshape(mask, shape(0, TAPS, 1, pixels), special_zero=True)
    weights = ops.multiply(ops.multiply(ops.multiply(wy, wx), modulation),
                           ops.convert(inside, "f32"))
    # A corner outside the map (weight 0) is written at its position wrapped around the map:
    # along each axis a tap's two corners are adjacent, so for a map 2 or more wide a wrapped
    # one never lands on an inside corner of its tap, and each pixel's inside corners have rows
    # of their own (the rows of S that coincide hold zeros only), written without a sum.
    pixel = ops.add(ops.multiply(wrapped(cy, height), const(width, np.int32)), wrapped(cx, width))
    row = ops.add(ops.multiply(pixel, const(TAPS, np.int32)),
                  const(tap.reshape(1, TAPS, 1, 1), np.int32))
    # (N, 36, HW): an output pixel's 36 terms in its column of S.
    row = ops.reshape(row, shape(0, TAPS * 4, pixels), special_zero=True)
    weights = ops.reshape(weights, shape(0, TAPS * 4, pixels), special_zero=True)
    # S, so that sampling is one product in bf16. Its zeros are padded out from a (N, 1, HW)
    # slice: OpenVINO's Broadcast made the 4-window vit_b refiner 220 ms against 166 ms with Pad
    # (quiet machine, bf16).
    zeros = ops.multiply(ops.slice(weights, const([0], np.int64), const([1], np.int64),
                                   const([1], np.int64), const([1], np.int64)), const(0.0))
    zeros = ops.pad(zeros, const([0, 0, 0], np.int64), const([0, pixels * TAPS - 1, 0], np.int64),
                    "constant", const(0.0))
    sampling = ops.scatter_elements_update(zeros, row, weights, const(1, np.int64), "none")
    out = ops.matmul(projected, sampling, True, False)  # (N, O, HW)
    out = ops.reshape(out, shape(0, out_channels, height, width), special_zero=True)
    return [out.output(0)]


def _token_major(x, channels: int, pixels: int):
    """(N, C, H, W) `x` as (N, HW, C) tokens: the refiner's token-major windows where `x` is
    their reshaped transpose (so the two transposes cancel), else a transpose."""
    import openvino.opset13 as ops

    node = x.get_node()
    if node.get_type_name() == "Reshape":
        source = node.input_value(0).get_node()
        if source.get_type_name() == "Transpose":
            order = source.input_value(1).get_node()
            tokens = source.input_value(0)
            if (order.get_type_name() == "Constant" and list(order.get_data()) == [0, 2, 1]
                    and tokens.get_partial_shape()[1:].is_static
                    and list(tokens.get_partial_shape()[1:].to_shape()) == [pixels, channels]):
                return tokens
    tokens = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))
    return ops.reshape(tokens, ops.constant(np.array([0, pixels, channels], np.int64)),
                       special_zero=True)
