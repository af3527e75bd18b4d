"""The click-replay gate of reduced-precision click graphs (decoder and refiner) against fp32.

A bf16 decoder and refiner are offered by an export only when, on the encoder gate's images
(export/quality_gate.py: the synthetic scenes plus any the caller adds, e.g. the golden
sessions), the whole click protocol on them agrees with the fp32 graphs (`CLICK_THRESHOLDS`):

- the same clicks are taken by both (simulated from the fp32 masks with upstream's clicker, 20
  per object, or given), refiner included, and the IoU between the two masks is taken after
  every click: its mean and its minimum;
- on every object with a ground truth, NoC@90 (the clicks to 90 % IoU, upstream's rule) on
  those clicks is the same for both.

Both comparisons run twice: on fp32 embeddings and on bf16 embeddings (the bf16 encoder is what
a user of bf16 click graphs is likely to pair them with). The figures are recorded in the
manifest whether the precision passed or not.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import numpy as np

from focsam_onnx.engine.cache import EmbeddingCache
from focsam_onnx.engine.click_runtime import open_click_graph
from focsam_onnx.engine.click_session import ClickSession
from focsam_onnx.engine.encoder_runtime import open_encoder
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.graph_spec import DECODER, REFINER
from focsam_onnx.engine.loaded_model import LoadedModel
from focsam_onnx.engine.manifest import ClickGate
from focsam_onnx.engine.prompts import Click
from focsam_onnx.evaluation.evaluate import NUM_CLICKS, simulate_clicks
from focsam_onnx.evaluation.metrics import binary_iou, noc
from focsam_onnx.export.quality_gate import GateCase, mask_agreement, synthetic_cases

GATE_EMBEDDINGS = ("fp32", "bf16")  # the encoder precisions the click graphs are gated on
NOC_THRESHOLD = 0.90


@dataclass(frozen=True)
class ClickThresholds:
    """Below (or, for NoC@90, beyond) any of these the precision is refused."""

    mean_mask_iou: float = 0.99
    min_mask_iou: float = 0.95
    noc90_differs: int = 0  # objects whose NoC@90 may differ from fp32's


CLICK_THRESHOLDS = ClickThresholds()


@dataclass(frozen=True)
class ClickGateReport:
    precision: str
    gate: ClickGate  # what the manifest records

    @property
    def failures(self) -> list[str]:
        g, t = self.gate, self.gate.thresholds
        out = []
        for emb in g.mean_mask_iou:
            where = f"on {emb} embeddings"
            if g.mean_mask_iou[emb] < t["mean_mask_iou"]:
                out.append(f"mean mask IoU {g.mean_mask_iou[emb]:.6f} < {t['mean_mask_iou']} "
                           f"{where}")
            if g.min_mask_iou[emb] < t["min_mask_iou"]:
                out.append(f"min mask IoU {g.min_mask_iou[emb]:.6f} < {t['min_mask_iou']} "
                           f"{where}")
            if g.noc90_differs[emb] > t["noc90_differs"]:
                out.append(f"NoC@90 differs on {g.noc90_differs[emb]:.0f} of {g.objects} "
                           f"objects {where}")
        return out

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def summary(self) -> str:
        g = self.gate
        per = "; ".join(f"{emb} embeddings: mask IoU vs fp32 mean {g.mean_mask_iou[emb]:.4f}, "
                        f"min {g.min_mask_iou[emb]:.4f}, NoC@90 differs on "
                        f"{g.noc90_differs[emb]:.0f}" for emb in g.mean_mask_iou)
        return (f"{self.precision} click graphs over {len(g.cases)} images, {g.objects} "
                f"objects, {g.clicks} clicks each way: {per}")


def click_engine(model: LoadedModel, precision: str, embeddings: str,
                 cache: EmbeddingCache, encoder=None, sessions: dict | None = None) -> FocSAMEngine:
    """`model` (opened at fp32) with its click graphs at `precision` (or `sessions`) and its
    encoder at `embeddings` (or `encoder`, already opened at that precision), sharing `cache`."""
    if sessions is None:
        sessions = model.sessions
    if sessions is model.sessions and precision != model.click_precision:
        sessions = {spec.name: open_click_graph(model.path / spec.filename, spec, precision,
                                                model.threads)
                    for spec in (DECODER, REFINER) if spec.name in model.sessions}
    if encoder is None:
        encoder = (model.encoder if embeddings == model.encoder_precision
                   else open_encoder(model.path, embeddings, model.threads))
    return FocSAMEngine(dataclasses.replace(model, sessions=sessions, encoder=encoder,
                                            encoder_precision=embeddings,
                                            click_precision=precision), cache)


def gate_clicks(model: LoadedModel, precision: str, cases: list[GateCase] | None = None,
                clicks: int = NUM_CLICKS,
                thresholds: ClickThresholds = CLICK_THRESHOLDS,
                candidate: dict | None = None) -> ClickGateReport:
    """The gate of click graphs at `precision` on `model` (opened at fp32), over the synthetic
    scenes and `cases`, `clicks` simulated clicks per object. `candidate` replaces the reduced
    graphs' sessions (a test's planted bad graph)."""
    cases = synthetic_cases() + list(cases or [])
    cache = EmbeddingCache(max_items=len(cases) * len(GATE_EMBEDDINGS))
    mean, low, differs, compared = {}, {}, {}, 0
    for embeddings in GATE_EMBEDDINGS:
        reference = click_engine(model, "fp32", embeddings, cache)
        reduced = click_engine(model, precision, embeddings, cache, reference.model.encoder,
                               candidate)
        ious, nocs = [], []
        for case in cases:
            case_ious, case_nocs = _replay(reference, reduced, case, clicks)
            ious += case_ious
            nocs += case_nocs
        mean[embeddings], low[embeddings] = float(np.mean(ious)), float(min(ious))
        differs[embeddings] = float(sum(a != b for a, b in nocs))
        compared = len(ious)
    objects = sum(case.gt is not None for case in cases)
    t = thresholds
    passed = all(mean[e] >= t.mean_mask_iou and low[e] >= t.min_mask_iou
                 and differs[e] <= t.noc90_differs for e in GATE_EMBEDDINGS)
    gate = ClickGate(tuple(c.name for c in cases), objects, compared, mean, low, differs,
                     dataclasses.asdict(t), passed)
    return ClickGateReport(precision, gate)


def _replay(reference: FocSAMEngine, reduced: FocSAMEngine, case: GateCase,
            clicks: int) -> tuple[list[float], list[tuple[int, int]]]:
    """Mask IoUs between the two engines after every step of the case's click sequence (given,
    or simulated on the reference's masks; the reduced engine takes the same steps), and the
    (reference, reduced) NoC@90 of the object when it has a ground truth."""
    ref = ClickSession(reference, reference.open_image(case.image))
    red = ClickSession(reduced, reduced.open_image(case.image))
    ious, ref_gt, red_gt = [], [], []

    def compare(click: Click | None, result) -> None:
        mask = red.step(click).mask
        ious.append(mask_agreement(result.mask, mask))
        if case.gt is not None:
            gt = case.gt.astype(np.uint8)
            ref_gt.append(binary_iou(result.mask.astype(np.uint8), gt))
            red_gt.append(binary_iou(mask.astype(np.uint8), gt))

    if case.clicks is not None:
        ref.replay(case.clicks, compare)
    else:
        simulate_clicks(ref, case.gt.astype(np.uint8), random.Random(case.name), clicks, compare)
    nocs = [(noc(ref_gt, NOC_THRESHOLD), noc(red_gt, NOC_THRESHOLD))] if ref_gt else []
    return ious, nocs
