"""The SAM-compatible pair: sam_encoder.onnx and sam_decoder.onnx, segment-anything's interface.

What SAM ONNX clients (segment-anything's notebook, samexporter, X-AnyLabeling) send and expect:

* `sam_encoder.onnx` takes the client's resized image, (h, w, 3) float32 R, G, B in 0..255 with
  the longest side 1024, and does inside the graph what upstream does outside: for FocSAM the
  flip to B, G, R (FocSAM was fine-tuned on BGR input; official SAM weights keep RGB), the
  per-channel normalisation, the transpose and the zero padding to 1024 x 1024. It is the native
  encoder graph with these nodes put in front, so the ViT is exported once. Unlike upstream
  FocSAM the image is not padded to a multiple of 32 before the resize: that is the clients'
  preprocessing, and its embeddings differ from the native path's (README).
* `sam_decoder.onnx` has segment-anything's six inputs and three outputs in order: `masks`
  (1, 4, H, W) logits at `orig_im_size`, `iou_predictions` (1, 4), `low_res_masks`
  (1, 4, 256, 256). Like `SamOnnxModel(return_single_mask=False)` it returns all four mask
  tokens; unlike it, the crop to the resized size follows `orig_im_size` at run time (the
  official export freezes it at the traced size).

Both are written at the requested opset with the lowest IR version that opset allows (opset 17
and 18: IR 8, which onnxruntime 1.16 reads). The decoder goes through the TorchScript exporter,
which writes opset 17 natively; the encoder, exported by the dynamo exporter at opset >= 18, is
converted down by onnx's version converter.
"""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper, version_converter
from onnx_ir.passes.common import DeduplicateHashedInitializersPass, LiftConstantsToInitializersPass
from torch import nn

from focsam_onnx.config import FOLD_MAX_POINTS, IMAGE_SIZE
from focsam_onnx.engine.graph_spec import ENCODER, SAM_DECODER, SAM_ENCODER
from focsam_onnx.engine.preprocess import PIXEL_MEAN, PIXEL_STD
from focsam_onnx.export.decoder_rewrites import rewrite_decoder
from focsam_onnx.export.manifest import GraphReport, external_data_files
from focsam_onnx.export.parity import ParityCase, check_parity
from focsam_onnx.models.focsam import FocSAM


def network_is_bgr(model: FocSAM) -> bool:
    """FocSAM was fine-tuned on B, G, R input; official SAM weights were trained on R, G, B."""
    return not model.cfg.is_plain_sam


class SamEncoderGraph(nn.Module):
    """Torch reference of sam_encoder.onnx: (h, w, 3) RGB 0..255 -> (1, 256, 64, 64)."""

    def __init__(self, model: FocSAM):
        super().__init__()
        self.backbone = model.backbone
        self.bgr = network_is_bgr(model)
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD), persistent=False)

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = input_image.flip(-1) if self.bgr else input_image
        x = ((x - self.mean) / self.std).permute(2, 0, 1)
        x = F.pad(x, (0, IMAGE_SIZE - x.shape[2], 0, IMAGE_SIZE - x.shape[1]))
        return self.backbone(x.unsqueeze(0))


class SamDecoderGraph(nn.Module):
    """Prompt encoder + all four masks + segment-anything's mask post-processing, branch-free.

    point_coords (1, N, 2) (x, y) in the 1024 frame, point_labels (1, N) (1, 0, 2 / 3 box
    corners, -1 padding), mask_input (1, 1, 256, 256), has_mask_input (1,), orig_im_size (2,)
    (H, W) float32. Returns masks (1, 4, H, W), iou_predictions (1, 4), low_res_masks
    (1, 4, 256, 256).
    """

    def __init__(self, model: FocSAM, decode_head: nn.Module | None = None):
        super().__init__()
        self.neck = model.neck
        self.decode_head = decode_head if decode_head is not None else model.decode_head
        with torch.no_grad():
            self.register_buffer("grid_pe", model.neck.grid_pe().clone(), persistent=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor,
                orig_im_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sparse = self.neck.embed_points(point_coords, point_labels)
        dense = self.neck.embed_mask(mask_input, has_mask_input)
        low_res, iou, _ = self.decode_head(image_embeddings, self.grid_pe, sparse, dense)
        return upscale_to_original(low_res, orig_im_size), iou, low_res


def upscale_to_original(low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """segment-anything's `mask_postprocessing` with the crop computed at run time.

    Bilinear to 1024 x 1024, keep the top-left resized size round(1024 / max(H, W) * (H, W)),
    bilinear to (H, W). The crop indexes rows and columns by `arange` of tensors, which the
    TorchScript tracer keeps dynamic (the official wrapper's `int(...)` becomes a constant).
    """
    size = orig_im_size.to(torch.float32)
    resized = torch.floor(IMAGE_SIZE / size.max() * size + 0.5).to(torch.int64)
    up = F.interpolate(low_res, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                       align_corners=False)
    up = up.index_select(2, torch.arange(resized[0])).index_select(3, torch.arange(resized[1]))
    hw = orig_im_size.to(torch.int64)
    return F.interpolate(up, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)


def export_sam_pair(model: FocSAM, out_dir: Path, opset: int) -> list[GraphReport]:
    """Write sam_encoder.onnx (from out_dir/encoder.onnx) and sam_decoder.onnx, parity-gated."""
    return [_export_encoder(model, out_dir, opset), _export_decoder(model, out_dir, opset)]


def _export_encoder(model: FocSAM, out_dir: Path, opset: int) -> GraphReport:
    start = time.perf_counter()
    # External weights (ViT-H) stay where they are: both encoders then read encoder.onnx.data.
    graph = onnx.load(str(out_dir / ENCODER.filename), load_external_data=False)
    # Preprocessing after the conversion: the 18 -> 17 adapters cannot convert every op.
    graph = _with_preprocessing(_at_opset(graph, opset), network_is_bgr(model))
    graph.ir_version = helper.find_min_ir_version_for(list(graph.opset_import))
    path = out_dir / SAM_ENCODER.filename
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))  # by path: it reads external weights beside the file
    gen = torch.Generator().manual_seed(1)
    cases = [ParityCase(f"{h}x{w} image", (torch.rand(h, w, 3, generator=gen) * 255,))
             for h, w in ((1024, 768), (683, 1024))]
    parity = check_parity(path, SAM_ENCODER, SamEncoderGraph(model).eval(), cases)
    return _report(SAM_ENCODER.name, path, parity, start, graph)


def _export_decoder(model: FocSAM, out_dir: Path, opset: int) -> GraphReport:
    start = time.perf_counter()
    path = out_dir / SAM_DECODER.filename
    graph = sam_decoder_graph(model, opset)
    onnx.save(graph, str(path))
    parity = check_parity(path, SAM_DECODER, SamDecoderGraph(model).eval(), _decoder_cases())
    return _report(SAM_DECODER.name, path, parity, start, graph)


def sam_decoder_graph(model: FocSAM, opset: int, rewrite: bool = True) -> onnx.ModelProto:
    """sam_decoder.onnx's graph: an ONNX `If` on the point count, the exact rewrite of
    `decoder_rewrites.py` (image-side projections folded onto the tokens) while there are at
    most FOLD_MAX_POINTS points, the decoder as written beyond (only that with `rewrite` False,
    for comparisons). The TorchScript exporter cannot trace a run-time branch, so each order is
    traced on its own and the two graphs become the branches (their shared weights kept once).
    """
    cases = _decoder_cases()
    graph = _traced_decoder(SamDecoderGraph(model).eval(), cases, opset)
    if rewrite:
        folded = SamDecoderGraph(model, rewrite_decoder(model.decode_head, None)).eval()
        graph = _without_duplicate_constants(
            _branch_on_points(_traced_decoder(folded, cases, opset), graph))
    graph.ir_version = helper.find_min_ir_version_for(list(graph.opset_import))
    # The tracer leaves every axis of the resized `masks` symbolic, and the `If` hides the
    # others' sizes; batch and token count are always 1 and 4, which clients (and the spec
    # check) read from the graph.
    for output, spec in zip(graph.graph.output, SAM_DECODER.outputs):
        for dim, size in zip(output.type.tensor_type.shape.dim, spec.shape):
            if isinstance(size, int):
                dim.Clear()
                dim.dim_value = size
    return graph


def _traced_decoder(module: SamDecoderGraph, cases: list[ParityCase],
                    opset: int) -> onnx.ModelProto:
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
                    "masks": {2: "orig_height", 3: "orig_width"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, cases[0].inputs, buffer, dynamo=False,
                          opset_version=opset, do_constant_folding=True,
                          input_names=SAM_DECODER.input_names,
                          output_names=SAM_DECODER.output_names, dynamic_axes=dynamic_axes)
    return _without_duplicate_constants(onnx.load_from_string(buffer.getvalue()))


def _branch_on_points(folded: onnx.ModelProto, projected: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: `folded` while point_coords has at most FOLD_MAX_POINTS points, else
    `projected`. Both take the same inputs; their values are renamed apart and their
    initializers lifted to the outer graph, where the branches read them."""
    outer = projected.graph
    inputs = {i.name for i in outer.input}
    branches, initializers = [], []
    for prefix, model in (("folded/", folded), ("projected/", projected)):
        body = model.graph

        def name(value: str, prefix: str = prefix) -> str:
            return value if value in inputs or not value else prefix + value

        nodes = []
        for node in body.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for a in node.attribute):
                raise RuntimeError(f"unexpected subgraph in the traced decoder: {node.op_type}")
            renamed = onnx.NodeProto()
            renamed.CopyFrom(node)
            renamed.name = prefix + node.name
            renamed.input[:] = [name(v) for v in node.input]
            renamed.output[:] = [name(v) for v in node.output]
            nodes.append(renamed)
        for tensor in body.initializer:
            lifted = onnx.TensorProto()
            lifted.CopyFrom(tensor)
            lifted.name = name(tensor.name)
            initializers.append(lifted)
        outputs = [helper.make_tensor_value_info(name(o.name), o.type.tensor_type.elem_type,
                                                 None) for o in body.output]
        branches.append(helper.make_graph(nodes, prefix.rstrip("/"), [], outputs))
    p = "points_branch/"
    choose = [
        helper.make_node("Shape", [SAM_DECODER.input_names[1]], [p + "shape"]),
        helper.make_node("Gather", [p + "shape", p + "axis"], [p + "points"], axis=0),
        helper.make_node("LessOrEqual", [p + "points", p + "max"], [p + "fold"]),
        helper.make_node("If", [p + "fold"], [o.name for o in outer.output],
                         then_branch=branches[0], else_branch=branches[1]),
    ]
    initializers += [numpy_helper.from_array(np.array(1, np.int64), p + "axis"),
                     numpy_helper.from_array(np.array(FOLD_MAX_POINTS, np.int64), p + "max")]
    graph = helper.make_graph(choose, "sam_decoder", list(outer.input), list(outer.output),
                              initializers)
    return helper.make_model(graph, opset_imports=list(projected.opset_import),
                             producer_name=projected.producer_name)


def _without_duplicate_constants(graph: onnx.ModelProto) -> onnx.ModelProto:
    """One initializer per distinct constant tensor.

    The TorchScript exporter writes a constant-folded value once per consumer: the grid's
    positional encoding, flattened to (1, 4096, 256), came out three times (both transformer
    layers and the final attention add it to the keys), 8 MB of copies in every variant.
    """
    model = onnx_ir.from_proto(graph)
    LiftConstantsToInitializersPass()(model)
    DeduplicateHashedInitializersPass()(model)
    return onnx_ir.to_proto(model)


def _decoder_cases() -> list[ParityCase]:
    gen = torch.Generator().manual_seed(2)
    embeddings = torch.randn(1, 256, 64, 64, generator=gen)
    logits = torch.randn(1, 1, 256, 256, generator=gen) * 4
    click = (torch.tensor([[[400.0, 300.0], [0.0, 0.0]]]), torch.tensor([[1.0, -1.0]]))
    box_and_click = (torch.tensor([[[500.0, 200.0], [100.0, 80.0], [900.0, 700.0]]]),
                     torch.tensor([[0.0, 2.0, 3.0]]))
    yes, no = torch.ones(1), torch.zeros(1)
    sizes = {"landscape 480x640": (480.0, 640.0), "portrait 1500x1000": (1500.0, 1000.0),
             "panorama 300x2000": (300.0, 2000.0)}
    cases = [ParityCase(f"click, {name}", (embeddings, *click, logits, no, torch.tensor(hw)))
             for name, hw in sizes.items()]
    cases.append(ParityCase("box + click, mask, 1024x1024",
                            (embeddings, *box_and_click, logits, yes, torch.tensor([1024.0] * 2))))
    for n in (FOLD_MAX_POINTS, FOLD_MAX_POINTS + 1):  # the last folded count, the first not
        points = torch.rand(1, n, 2, generator=gen) * 1000
        labels = (torch.arange(n) % 2).to(torch.float32).unsqueeze(0)
        cases.append(ParityCase(f"{n} points, mask, 480x640",
                                (embeddings, points, labels, logits, yes,
                                 torch.tensor([480.0, 640.0]))))
    return cases


def _with_preprocessing(graph: onnx.ModelProto, bgr: bool) -> onnx.ModelProto:
    """Put flip / normalise / transpose / pad nodes in front of the native encoder's input."""
    (native_input,) = graph.graph.input
    p = "sam_preprocess/"
    constants = {
        "channels": np.array([2, 1, 0], np.int64), "mean": np.array(PIXEL_MEAN, np.float32),
        "std": np.array(PIXEL_STD, np.float32), "start": np.array([0], np.int64),
        "end": np.array([2], np.int64), "canvas": np.array([IMAGE_SIZE] * 2, np.int64),
        "begin_pads": np.zeros(4, np.int64), "batch_axis": np.array([0], np.int64),
    }
    tensors = [numpy_helper.from_array(v, p + k) for k, v in constants.items()]
    image = SAM_ENCODER.inputs[0].name
    ordered = p + "ordered" if bgr else image
    nodes = [helper.make_node("Gather", [image, p + "channels"], [ordered], axis=2)] if bgr else []
    nodes += [
        helper.make_node("Sub", [ordered, p + "mean"], [p + "centred"]),
        helper.make_node("Div", [p + "centred", p + "std"], [p + "normalised"]),
        helper.make_node("Transpose", [p + "normalised"], [p + "chw"], perm=[2, 0, 1]),
        helper.make_node("Shape", [image], [p + "shape"]),
        helper.make_node("Slice", [p + "shape", p + "start", p + "end"], [p + "hw"]),
        helper.make_node("Sub", [p + "canvas", p + "hw"], [p + "end_pads"]),
        helper.make_node("Concat", [p + "begin_pads", p + "end_pads"], [p + "pads"], axis=0),
        helper.make_node("Pad", [p + "chw", p + "pads"], [p + "padded"]),
        helper.make_node("Unsqueeze", [p + "padded", p + "batch_axis"], [native_input.name]),
    ]
    spec = SAM_ENCODER.inputs[0]
    new_input = helper.make_tensor_value_info(image, onnx.TensorProto.FLOAT, list(spec.shape))
    body = graph.graph
    old_nodes = list(body.node)
    del body.node[:]
    body.node.extend(nodes + old_nodes)
    body.initializer.extend(tensors)
    body.input.remove(native_input)
    body.input.insert(0, new_input)
    return graph


def _at_opset(graph: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The native encoder converted to `opset` if need be."""
    if graph.opset_import[0].version != opset:
        graph = version_converter.convert_version(graph, opset)
        if opset < 18:
            # The 18 -> 17 adapters move Reduce* axes back to attributes but leave the
            # opset-18-only attribute `noop_with_empty_axes` (always its default 0 here).
            for node in graph.graph.node:
                if node.op_type.startswith("Reduce"):
                    kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
                    del node.attribute[:]
                    node.attribute.extend(kept)
    return graph


def _report(name: str, path: Path, parity: dict[str, float], start: float,
            graph: onnx.ModelProto) -> GraphReport:
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    files = [path.name, *external_data_files(graph)]
    return GraphReport(name, files, sum((path.parent / f).stat().st_size for f in files), parity,
                       time.perf_counter() - start, False,
                       [f"opset {opset}, IR version {graph.ir_version}"])
