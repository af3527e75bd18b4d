"""The click graphs at each precision (fp32 on onnxruntime, bf16 on OpenVINO), side by side.

One stage group (`click_precision_stages`, run in its own process like the others): every
comparison alternates the precisions round by round, so a busy machine slows them alike.

- interaction per click: 20-click sessions (refiner at click 2) after the embeddings exist,
  with the refiner's ROI fixed to the whole canvas (16 windows, the random-weight worst case)
  and to 4 windows (what a real object selects);
- the decoder like for like: our decoder plus its upsampling to the 480x640 image against
  segment-anything's single-mask decoder, which upsamples in-graph;
- the refine click (coarse decode + refiner + decode on the refined embeddings) against the
  graphs as first written (no rewrites, fp32);
- each precision's peak memory: a fresh process that opens the decoder and refiner at it and
  runs whole-canvas refine clicks.

bf16 is timed whether or not the export offers it (the gate figures come from its manifest when
`export --click-precision bf16` ran); without the `openvino` extra the group reports nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.bench.cases import (
    DECODER_CLICKS,
    REFINE_CLICK_WINDOWS,
    SCENE_HW,
    SESSION_CLICKS,
    decoder_feeds,
    decoder_key,
    refiner_feeds,
    refiner_key,
    synthetic_scene,
    window_bbox,
)
from focsam_onnx.bench.isolated import in_subprocess
from focsam_onnx.bench.measure import interleaved, median_ratio, summarize
from focsam_onnx.engine.focsam_engine import FocSAMEngine
from focsam_onnx.engine.graph_spec import CLICK_PRECISIONS, DECODER, REFINER
from focsam_onnx.engine.roi import Roi, token_mask

log = logging.getLogger(__name__)

ROI_WINDOWS = (16, 4)  # the whole canvas, and a real object's 4 windows


class FixedRoiEngine(FocSAMEngine):
    """An engine whose refiner always gets `fixed_roi` (the ROI, not the weights, sets the
    refiner's cost)."""

    def __init__(self, engine: FocSAMEngine, fixed_roi: Roi):
        super().__init__(engine.model, engine.cache)
        self.fixed_roi = fixed_roi

    def roi(self, coarse_logits: np.ndarray) -> Roi:
        return self.fixed_roi


def fixed_roi(windows: int) -> Roi:
    bbox = window_bbox(windows)
    return Roi(bbox, bbox, token_mask(bbox))


def click_graphs(model_dir: str, precision: str, threads: int) -> dict:
    """{"decoder": ..., "refiner": ...} at `precision`, each run as `graph.run(None, feeds)`."""
    from focsam_onnx.engine.click_runtime import open_click_graph

    return {spec.name: open_click_graph(Path(model_dir) / spec.filename, spec, precision, threads)
            for spec in (DECODER, REFINER)}


def click_precision_stages(s, reference: str, sam_single_mask: str, proxy: str) -> dict:
    """Every click precision, interleaved: sessions per ROI (and the SimpleClick proxy at
    `proxy` once a round), decoder like for like, refine click; each precision's peak memory
    and gate figures. Entry names carry the precision."""
    from focsam_onnx.engine.click_runtime import import_openvino
    from focsam_onnx.engine.loaded_model import open_model_dir
    from focsam_onnx.errors import MissingExtra

    try:
        import_openvino()
    except MissingExtra as err:
        log.warning("bf16 click graphs not benchmarked: %s", err)
        return {}
    model = open_model_dir(s.model_dir, s.threads)
    graphs = {p: click_graphs(s.model_dir, p, s.threads) for p in CLICK_PRECISIONS}
    engines = {p: FocSAMEngine(dataclasses.replace(model, sessions=g, click_precision=p))
               for p, g in graphs.items()}
    out = _interaction(s, engines, proxy_click(proxy, s))
    out.update(_decoder_to_image(s, graphs, sam_single_mask))
    out.update(_refine_click(s, graphs, reference))
    records = model.manifest.click_precisions
    for precision in CLICK_PRECISIONS:
        peak = in_subprocess(refine_click_peak_mb, s.model_dir, precision, s.threads)
        gate = records.get(precision)
        for windows in ROI_WINDOWS:
            entry = out[f"interaction_{precision}_{windows}_windows"]
            entry["click_graphs_peak_mb"] = peak
            entry["gate"] = (None if gate is None or gate.gate is None
                             else dataclasses.asdict(gate.gate))
    return out


def proxy_click(proxy: str, s):
    """One SimpleClick proxy click at `proxy`, as `stages.proxy_stages` times it."""
    from focsam_onnx.bench.simpleclick_proxy import INPUT_NAME, ProxyConfig
    from focsam_onnx.bench.stages import baseline_session

    session = baseline_session(proxy, s.threads)
    size = ProxyConfig().image_size
    image = np.random.default_rng(s.seed).standard_normal((1, 3, size, size), np.float32)
    return lambda: session.run(None, {INPUT_NAME: image})


def _interaction(s, engines: dict[str, FocSAMEngine], proxy) -> dict:
    """Per-click wall time of SESSION_CLICKS-click sessions, precisions alternating per
    session, for each fixed ROI; a proxy click after each round, so that the ratio to it is
    taken within the round (this machine's speed drifts by tens of percent over minutes)."""
    from focsam_onnx.bench.stages import run_session

    image, gt = synthetic_scene()
    encoded = engines["fp32"].open_image(image)
    out = {}
    for windows in ROI_WINDOWS:
        roi = fixed_roi(windows)
        fixed = {p: FixedRoiEngine(e, roi) for p, e in engines.items()}
        per_click: dict[str, list[float]] = {p: [] for p in fixed}
        proxy_seconds: list[float] = []
        system_info.reset_peak_rss()
        for round_ in range(s.warmup + s.repeats):
            for precision, engine in fixed.items():
                steps = run_session(engine, encoded, gt, seed=round_)
                if round_ >= s.warmup:
                    per_click[precision].append(sum(st["wall"] for st in steps) / 1000.0
                                                / SESSION_CLICKS)
            start = time.perf_counter()
            proxy()
            if round_ >= s.warmup:
                proxy_seconds.append(time.perf_counter() - start)
        for precision, seconds in per_click.items():
            out[f"interaction_{precision}_{windows}_windows"] = {
                **summarize(seconds), "peak_mb": system_info.peak_rss_mb(),
                "clicks_per_session": SESSION_CLICKS, "roi_windows": windows,
                "interleaved_vs_fp32": median_ratio(seconds, per_click["fp32"]),
                "interleaved_vs_proxy": median_ratio(seconds, proxy_seconds),
                "proxy_in_rounds_p50_ms": 1000.0 * float(np.median(proxy_seconds))}
    return out


def _decoder_to_image(s, graphs: dict, sam_single_mask: str) -> dict:
    """Our decoder + upsampling to SCENE_HW at each precision, alternating with
    segment-anything's single-mask decoder on the same feeds."""
    from focsam_onnx.bench.baselines import sam_decoder_feeds
    from focsam_onnx.bench.stages import baseline_session
    from focsam_onnx.engine.postprocess import logits_to_mask
    from focsam_onnx.engine.preprocess import ImageGeometry

    theirs = baseline_session(sam_single_mask, s.threads)
    geometry = ImageGeometry.from_size(*SCENE_HW)
    rng, out = np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        sam_feeds = sam_decoder_feeds(feeds, SCENE_HW)
        fns = [lambda d=g["decoder"], f=feeds: logits_to_mask(d.run(None, f)[0], geometry)
               for g in graphs.values()]
        system_info.reset_peak_rss()
        *ours, sam = interleaved(fns + [lambda f=sam_feeds: theirs.run(None, f)], s.warmup,
                                 2 * s.repeats)
        for precision, seconds in zip(graphs, ours, strict=True):
            out[decoder_key(f"click_decoder_to_image_{precision}", n)] = {
                **summarize(seconds), "peak_mb": system_info.peak_rss_mb(),
                "sam_single_mask_p50_ms": summarize(sam)["p50_ms"],
                "interleaved_vs_sam_single_mask": median_ratio(seconds, sam),
                "interleaved_vs_fp32": median_ratio(seconds, ours[0])}
    return out


def _refine_click(s, graphs: dict, reference: str) -> dict:
    """The refine click at each precision, alternating with the graphs as first written."""
    rng, out = np.random.default_rng(s.seed), {}
    before = click_graphs(reference, "fp32", s.threads)
    for k in REFINE_CLICK_WINDOWS:
        decoder_in, refiner_in = decoder_feeds(5, rng), refiner_feeds(k, rng)
        fns = [lambda g=g, d=decoder_in, r=refiner_in: refine_click(g, d, r)
               for g in (*graphs.values(), before)]
        system_info.reset_peak_rss()
        *ours, ref = interleaved(fns, s.warmup, s.repeats)
        for precision, seconds in zip(graphs, ours, strict=True):
            out[refiner_key(f"click_refine_{precision}", k)] = {
                **summarize(seconds), "peak_mb": system_info.peak_rss_mb(),
                "reference_p50_ms": summarize(ref)["p50_ms"],
                "interleaved_vs_reference": median_ratio(seconds, ref),
                "interleaved_vs_fp32": median_ratio(seconds, ours[0])}
    return out


def refine_click(graphs: dict, decoder_in: dict, refiner_in: dict) -> None:
    """Coarse decode, refiner, decode on the refined embeddings (graphs only)."""
    graphs["decoder"].run(None, decoder_in)
    (refined,) = graphs["refiner"].run(None, refiner_in)
    graphs["decoder"].run(None, {**decoder_in, DECODER.input_names[0]: refined})


def refine_click_peak_mb(model_dir: str, precision: str, threads: int) -> float:
    """Peak RSS of a fresh process that opens the click graphs at `precision` and runs three
    whole-canvas refine clicks (for `in_subprocess`)."""
    graphs = click_graphs(model_dir, precision, threads)
    rng = np.random.default_rng(0)
    for _ in range(3):
        refine_click(graphs, decoder_feeds(20, rng), refiner_feeds(16, rng))
    return system_info.process_peak_mb()
