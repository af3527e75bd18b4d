"""Export a FocSAM model to the three ONNX graphs, gate each on parity, write the manifest."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from focsam_onnx.engine.atomic_io import staged_folder
from focsam_onnx.engine.graph_spec import GraphSpec
from focsam_onnx.engine.manifest import Manifest, Source
from focsam_onnx.export.custom_ops import TRANSLATIONS
from focsam_onnx.export.manifest import GraphReport, write_manifest
from focsam_onnx.export.parity import ParityError, check_parity
from focsam_onnx.export.wrappers import GraphExport, graph_exports
from focsam_onnx.models.focsam import FocSAM

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20  # opset 20 has Gelu, which onnxruntime runs as one fused kernel
TWO_GB = 2**31  # protobuf's limit: larger models keep their weights in an external data file


def export_model(model: FocSAM, out_dir: str | Path, source: Source,
                 opset: int = DEFAULT_OPSET, simplify: bool = True,
                 on_graph: Callable[[str], None] | None = None,
                 sam_compatible: bool = False,
                 external_data_from: int = TWO_GB) -> tuple[Manifest, list[GraphReport]]:
    """Write encoder.onnx, decoder.onnx, (FocSAM only) refiner.onnx and manifest.json.

    `sam_compatible` adds sam_encoder.onnx and sam_decoder.onnx (segment-anything's ONNX
    interface, see export/sam_pair.py) and an X-AnyLabeling config for them. A graph whose
    parameters take `external_data_from` bytes or more keeps them in `<graph>.onnx.data`
    (protobuf's 2 GB limit; tests lower it to take that path on a tiny model).

    Every graph is checked against `model` in onnxruntime before it is kept (and again after
    simplification); a ParityError names the graph, output and difference. The files are made
    in a folder beside `out_dir` that replaces it only once every graph passed. `source` records
    where the weights came from (checkpoint path and hash, or random init and seed).
    Returns the manifest and one report per graph.
    """
    with staged_folder(out_dir) as staging:  # an interrupted export leaves `out_dir` as it was
        reports = []
        for graph in graph_exports(model):
            if on_graph is not None:
                on_graph(graph.spec.name)
            try:
                reports.append(export_graph(graph, staging, opset, simplify, external_data_from))
            except ParityError as err:
                raise ParityError(f"{err}; nothing was written to {out_dir}") from None
        if sam_compatible:
            from focsam_onnx.export.sam_pair import export_sam_pair
            from focsam_onnx.export.xanylabeling import write_xanylabeling_config

            if on_graph is not None:
                on_graph("SAM-compatible pair")
            reports += export_sam_pair(model, staging, opset)
            write_xanylabeling_config(staging, model.cfg.variant,
                                      "sam" if model.cfg.is_plain_sam else "focsam")
        manifest = write_manifest(staging, model.cfg, reports, opset, source)
    return manifest, reports


def export_graph(graph: GraphExport, out_dir: Path, opset: int, simplify: bool,
                 external_data_from: int = TWO_GB) -> GraphReport:
    start = time.perf_counter()
    spec, path = graph.spec, out_dir / graph.spec.filename
    large = _parameter_bytes(graph.exported) >= external_data_from
    notes = []
    if opset < graph.min_opset:
        notes.append(f"opset {graph.min_opset} (its operators need it), not {opset}")
        opset = graph.min_opset
    with torch.no_grad():
        # The dynamo exporter: the legacy one runs out of memory on ViT-H and cannot give the
        # refiner's dynamic window count (an empty selection crashes its Reshape in ORT).
        torch.onnx.export(
            graph.exported, graph.example_inputs, str(path), dynamo=True,
            input_names=spec.input_names, output_names=spec.output_names,
            opset_version=opset, external_data=large, verbose=False,
            dynamic_shapes=_dynamic_shapes(spec), custom_translation_table=TRANSLATIONS,
        )
    parity = check_parity(path, spec, graph.module, graph.cases)
    simplified = False
    if simplify:
        if large:
            notes.append("not simplified: onnxsim cannot handle weights over 2 GB")
        else:
            simplified, note = _simplify(path)
            notes.append(note)
            if simplified:
                after = check_parity(path, spec, graph.module, graph.cases)
                parity = {name: max(parity[name], after[name]) for name in parity}
    for note in notes:
        log.info("%s: %s", spec.filename, note)
    files = [p.name for p in _graph_files(path)]
    return GraphReport(spec.name, files, sum((out_dir / f).stat().st_size for f in files),
                       parity, time.perf_counter() - start, simplified, notes)


def _dynamic_shapes(spec: GraphSpec) -> tuple[dict | None, ...]:
    """The spec's named dynamic axes as torch.export Dims; one Dim per name, shared."""
    dims: dict[str, torch.export.Dim] = {}
    shapes = []
    for t in spec.inputs:
        axes = {i: dims.setdefault(d, torch.export.Dim(d)) for i, d in t.dynamic_axes.items()}
        shapes.append(axes or None)
    return tuple(shapes)


def _parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _graph_files(path: Path) -> list[Path]:
    return [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]


def _simplify(path: Path) -> tuple[bool, str]:
    """Run onnxsim in place; keep the original when it fails or cannot check its result."""
    import onnxsim

    model = onnx.load(str(path))
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as err:  # onnxsim raises bare RuntimeErrors from C++
        return False, f"not simplified: onnxsim failed ({str(err).splitlines()[0][:200]})"
    if not ok:
        return False, "not simplified: onnxsim could not validate its result"
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(simplified, str(tmp))
    os.replace(tmp, path)
    return True, "simplified with onnxsim"
