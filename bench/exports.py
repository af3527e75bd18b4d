"""The graphs the benchmark times, exported once and kept in its cache folder.

A random-init FocSAM export is reused only while its manifest says it was made from the same
variant, seed and model/exporter code; the baselines (segment-anything's ONNX decoder, the
SimpleClick ViT-H proxy) keep their own cache records. Exports run in a subprocess (torch stays
out of the timing processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from focsam_onnx.bench import isolated
from focsam_onnx.engine.manifest import Source

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]


def export_source(variant: str, seed: int) -> Source:
    """What a cached export was made from, including the code that made its graphs: an export
    from older model or exporter code is stale even with the same variant and seed."""
    from focsam_onnx.export.model_source import random_init_source

    digest = hashlib.sha256()
    for path in sorted([*PACKAGE.glob("models/*.py"), *PACKAGE.glob("export/*.py")]):
        digest.update(path.read_bytes())
    return random_init_source(variant, seed, code=digest.hexdigest()[:16])


def _quiet_exporters() -> None:
    from focsam_onnx.export.model_source import quiet_exporter_logs

    quiet_exporter_logs()


def export_focsam(variant: str, seed: int, out_dir: str) -> None:
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.export.model_source import random_init

    _quiet_exporters()
    model, _ = random_init(variant, seed)
    export_model(model, out_dir, export_source(variant, seed))
    _add_precisions(out_dir)


def _add_precisions(out_dir: str) -> None:
    """Offer int8, and bf16 encoder and click graphs where the OpenVINO extra is installed, if
    their gates pass."""
    from focsam_onnx.engine.encoder_runtime import import_openvino
    from focsam_onnx.errors import MissingExtra
    from focsam_onnx.export.encoder_precision import add_encoder_precisions
    from focsam_onnx.export.quality_gate import GateError

    precisions = ["int8"]
    try:
        import_openvino()
        precisions.append("bf16")
    except MissingExtra as err:
        log.warning("bf16 not benchmarked: %s", err)
    try:
        add_encoder_precisions(out_dir, precisions)
    except GateError as err:  # the passing ones are offered; the bench reports what is
        log.warning("%s", err)
    if "bf16" in precisions:  # the click graphs' gate: its figures go to the report either way
        from focsam_onnx.export.click_precision import add_click_precision

        try:
            add_click_precision(out_dir, "bf16")
        except GateError as err:
            log.warning("%s", err)


def focsam_model_dir(cache_dir: Path, variant: str, seed: int) -> Path:
    """`cache_dir/<variant>-seed<seed>`, exported (in a subprocess) unless its manifest is valid."""
    from focsam_onnx.engine.integrity import verify_files
    from focsam_onnx.engine.loaded_model import read_manifest
    from focsam_onnx.engine.sessions import ModelDirError

    out_dir = cache_dir / f"{variant}-seed{seed}"
    try:
        manifest = read_manifest(out_dir)
        verify_files(out_dir, manifest, manifest.files)  # sizes and stamps
        if manifest.source == export_source(variant, seed) and "refiner" in manifest.graphs:
            return out_dir
    except ModelDirError:
        pass
    (out_dir / "manifest.json").unlink(missing_ok=True)
    log.info("exporting random-init %s to %s (first use; cached afterwards)", variant, out_dir)
    isolated.in_subprocess(export_focsam, variant, seed, str(out_dir))
    return out_dir


def export_sam_decoder(out_dir: str, seed: int, orig_hw: tuple[int, int] = (1024, 1024),
                       single_mask: bool = False) -> str:
    from focsam_onnx.bench.baselines import cached_sam_onnx_decoder

    _quiet_exporters()
    return str(cached_sam_onnx_decoder(out_dir, seed, orig_hw, single_mask))


REFERENCE_GRAPHS = ("decoder", "refiner")


def export_reference_graphs(variant: str, seed: int, out_dir: str) -> None:
    """The decoder and refiner graphs as written in models/ (before their exact rewrites), for
    the refine-click ratio against today's click."""
    from focsam_onnx.export.exporter import DEFAULT_OPSET, export_graph
    from focsam_onnx.export.model_source import random_init
    from focsam_onnx.export.wrappers import decoder_export, refiner_export

    _quiet_exporters()
    model, _ = random_init(variant, seed)
    del model.backbone  # never exported here
    for graph in (decoder_export(model, rewrite=False), refiner_export(model, rewrite=False)):
        export_graph(graph, Path(out_dir), DEFAULT_OPSET, True)


def reference_graphs(cache_dir: Path, variant: str, seed: int) -> Path:
    """`cache_dir/<variant>-seed<seed>-reference/` holding the unrewritten decoder.onnx and
    refiner.onnx, exported unless a record says they were made from this variant, seed and
    code. Random weights of the variant serve any model of it: the graphs' cost does not
    depend on the weights' values."""
    out_dir = cache_dir / f"{variant}-seed{seed}-reference"
    record = out_dir / "source.json"
    source = {**dataclasses.asdict(export_source(variant, seed)), "graphs": REFERENCE_GRAPHS}
    try:
        if (all((out_dir / f"{name}.onnx").is_file() for name in REFERENCE_GRAPHS)
                and json.loads(record.read_text()) == json.loads(json.dumps(source))):
            return out_dir
    except (OSError, ValueError):
        pass
    out_dir.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    log.info("exporting the unrewritten %s decoder and refiner to %s (first use)", variant,
             out_dir)
    isolated.in_subprocess(export_reference_graphs, variant, seed, str(out_dir))
    record.write_text(json.dumps(source) + "\n")
    return out_dir


def export_simpleclick_proxy(out_dir: str, depth: int, seed: int) -> str:
    from focsam_onnx.bench.simpleclick_proxy import ProxyConfig, export_proxy

    _quiet_exporters()
    return str(export_proxy(out_dir, ProxyConfig(depth=depth), seed))
