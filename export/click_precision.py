"""Reduced-precision click graphs added to an export: gated, recorded either way, offered if passed.

The decoder and refiner files stay as they are (bf16 runs them through OpenVINO); what an export
gains is the manifest's `click_precisions` entry with the click-replay gate's figures
(export/click_gate.py). A precision that fails is recorded with its figures, not offered, and
reported with a GateError; the fp32 export stays usable.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from focsam_onnx.engine.graph_spec import DEFAULT_PRECISION, get_click_precision
from focsam_onnx.engine.loaded_model import load_model_dir, read_manifest
from focsam_onnx.engine.manifest import ClickPrecision
from focsam_onnx.evaluation.evaluate import NUM_CLICKS
from focsam_onnx.export.click_gate import (
    CLICK_THRESHOLDS,
    ClickGateReport,
    ClickThresholds,
    gate_clicks,
)
from focsam_onnx.export.manifest import save_manifest
from focsam_onnx.export.quality_gate import GateCase, GateError

log = logging.getLogger(__name__)


def add_click_precision(model_dir: str | Path, precision: str,
                        cases: list[GateCase] | None = None, clicks: int = NUM_CLICKS,
                        threads: int | None = None,
                        thresholds: ClickThresholds = CLICK_THRESHOLDS,
                        candidate: dict | None = None) -> ClickGateReport | None:
    """Gate the click graphs of `model_dir` at `precision` and record the figures; offer the
    precision if it passed, else raise GateError (after recording). fp32 needs no gate (None).

    `cases` are gate images beside the built-in synthetic scenes; `clicks` the simulated clicks
    per object; `candidate` replaces the reduced graphs (a test's planted bad graph).
    """
    model_dir = Path(model_dir)
    runtime = get_click_precision(precision)
    if precision == DEFAULT_PRECISION:
        return None
    manifest = read_manifest(model_dir)
    model = load_model_dir(model_dir, manifest, threads)
    report = gate_clicks(model, precision, cases, clicks, thresholds, candidate)
    log.info("click-replay gate %s: %s", "passed" if report.passed else "FAILED",
             report.summary())
    recorded = dict(manifest.click_precisions) | {precision: ClickPrecision(runtime, report.gate)}
    save_manifest(model_dir, dataclasses.replace(manifest, click_precisions=recorded))
    if not report.passed:
        raise GateError(f"{model_dir}: the {precision} decoder and refiner fail their "
                        f"click-replay gate ({', '.join(report.failures)}; {report.summary()}),"
                        " so they are not offered (the figures are in manifest.json)")
    return report
