"""Reduced-precision encoders added to an export: written (int8), gated, recorded.

Each precision runs the quality gate against the fp32 encoder of the same directory; one that
passes is listed under the manifest's `encoder_precisions` with its gate figures, one that fails
is removed again and reported with a GateError (the fp32 export and any precision that passed
stay usable).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from focsam_onnx.engine.graph_spec import DEFAULT_PRECISION, PRECISIONS, get_precision
from focsam_onnx.engine.loaded_model import load_model_dir, read_manifest
from focsam_onnx.engine.manifest import EncoderPrecision
from focsam_onnx.evaluation.evaluate import NUM_CLICKS
from focsam_onnx.export.manifest import file_entry, model_id_of, save_manifest
from focsam_onnx.export.quality_gate import (
    THRESHOLDS,
    GateCase,
    GateError,
    GateReport,
    Thresholds,
    gate_model,
)
from focsam_onnx.export.quantize import quantize_encoder

log = logging.getLogger(__name__)


def add_encoder_precisions(model_dir: str | Path, precisions: list[str],
                           cases: list[GateCase] | None = None, clicks: int = NUM_CLICKS,
                           threads: int | None = None,
                           thresholds: Thresholds = THRESHOLDS) -> dict[str, GateReport]:
    """Gate each reduced precision in `precisions` on `model_dir` and offer those that pass.

    `cases` are gate images beside the built-in synthetic scenes; `clicks` the simulated
    clicks per object. Returns every gate's report; raises GateError after recording the
    passing ones when any failed.
    """
    model_dir = Path(model_dir)
    reduced = [get_precision(p).name for p in dict.fromkeys(precisions)
               if p != DEFAULT_PRECISION]
    if not reduced:
        return {}
    manifest = read_manifest(model_dir)
    files = dict(manifest.files)
    for precision in reduced:
        if precision == "int8":
            quantize_encoder(model_dir)
        filename = PRECISIONS[precision].filename
        files.setdefault(filename, file_entry(model_dir / filename))
    model = load_model_dir(model_dir, dataclasses.replace(manifest, files=files), threads)
    reports, offered = {}, dict(manifest.encoder_precisions)
    for precision in reduced:
        report = gate_model(model, precision, cases, clicks, thresholds)
        log.info("quality gate %s: %s", "passed" if report.passed else "FAILED", report.summary())
        reports[precision] = report
        offered.pop(precision, None)
        if report.passed:
            spec = PRECISIONS[precision]
            offered[precision] = EncoderPrecision(spec.filename, spec.runtime, report.figures())
    used = {PRECISIONS[p].filename for p in offered}
    for filename in {PRECISIONS[p].filename for p in reduced} - used:
        (model_dir / filename).unlink(missing_ok=True)
        files.pop(filename, None)
    save_manifest(model_dir, dataclasses.replace(manifest, files=files, model_id=model_id_of(files),
                                                 encoder_precisions=offered))
    refusals = [r.refusal(model_dir) for r in reports.values() if not r.passed]
    if refusals:
        raise GateError("; ".join(refusals))
    return reports
