"""CPU latency benchmark: where every millisecond of a FocSAM interaction goes, and the baselines.

Run `python bench/latency.py` (or `focsam-onnx bench`). It measures, after warm-up runs, the
median and p90 wall time and the peak resident memory of: preprocessing and the encoder graph
(once per image); the decoder graph per click (1, 5, 20 clicks, mask input on); the refiner graph
once per object (1, 4, 9, 16 selected windows); a 20-click session through the engine (per-click
interaction latency, the cold image open and a reopen from the disk cache); and, in the same run,
the official segment-anything ONNX decoder, our torch modules in eager mode and a SimpleClick
ViT-H cost proxy (see `simpleclick_proxy.py`).

Each group of stages runs in its own fresh process, which loads only the graph it needs, so one
big model is in memory at a time and "peak MB" is that process's peak resident memory while the
stage ran (model, runtime and interpreter included; reset per stage via VmHWM where Linux allows,
see `system_info.py`). Random-init exports are cached in `--cache-dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.config import VARIANT_NAMES
from focsam_onnx.engine.graph_spec import DECODER, ENCODER, REFINER
from focsam_onnx.engine.manifest import Source

log = logging.getLogger(__name__)

DECODER_CLICKS = (1, 5, 20)
REFINER_WINDOWS = (1, 4, 9, 16)
SESSION_CLICKS = 20
SCENE_HW = (480, 640)  # GrabCut / Berkeley-sized: post-processing cost scales with the image
QUICK_PROXY_DEPTH = 1  # a 1-block ViT-H keeps --quick short; reported as a reduced proxy

# Per-click CPU times from the FocSAM paper (seconds).
PAPER = {"focsam_s_per_click": 0.39, "simpleclick_vit_h_s_per_click": 6.99,
         "sam_vit_h_s_per_click": 0.35, "focsam_vs_simpleclick": 0.39 / 6.99}

# What the project tracks (measured and printed, never asserted): name -> (bound, unit).
TARGETS = {
    "decoder_vs_sam_onnx_decoder": (0.8, "ratio"),
    "refiner_4_windows_vs_decoder_click": (1.5, "ratio"),
    "encoder_ort_vs_torch": (0.6, "ratio"),
    "encoder_peak_mb": (6144.0, "MB"),
    "interaction_vs_simpleclick_vit_h": (0.005, "ratio"),
    "reopen_cached_image_ms": (20.0, "ms"),
}


@dataclass(frozen=True)
class Settings:
    """What every stage process needs to know (picklable)."""

    model_dir: str
    variant: str
    threads: int
    warmup: int
    repeats: int
    seed: int = 0


# ---------------------------------------------------------------- timing and inputs


def summarize(seconds: list[float]) -> dict:
    """Wall times in seconds -> p50_ms, p90_ms, mean_ms, min_ms, n (linear-interpolated
    percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timed runs: repeats must be >= 1")
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "n": int(ms.size)}


def measure(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Time `fn` `repeats` times after `warmup` discarded runs; adds the stage's peak RSS."""
    system_info.reset_peak_rss()
    rss_at_start = system_info.current_rss_mb()
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {**summarize(seconds), "peak_mb": system_info.peak_rss_mb(),
            "rss_at_start_mb": rss_at_start}


def decoder_feeds(n_clicks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decoder inputs for `n_clicks` clicks plus the padding point, mask input on.

    point_coords: (1, n+1, 2) float32 (x, y) in the 1024 frame, the last row (0, 0) padding;
    point_labels: (1, n+1) float32, first click positive, then random 1/0, padding -1.
    """
    coords = np.zeros((1, n_clicks + 1, 2), np.float32)
    coords[0, :n_clicks] = rng.uniform(0, 1024, (n_clicks, 2))
    labels = np.full((1, n_clicks + 1), -1.0, np.float32)
    labels[0, :n_clicks] = rng.integers(0, 2, n_clicks)
    labels[0, 0] = 1.0
    values = (rng.standard_normal((1, 256, 64, 64), np.float32), coords, labels,
              rng.standard_normal((1, 1, 256, 256), np.float32) * 4,
              np.ones(1, np.float32))
    return dict(zip(DECODER.input_names, values))


def window_token_mask(windows: int) -> np.ndarray:
    """(1, 1, 64, 64) 0/1 token mask whose ROI selects `windows` (1, 4, 9 or 16) 16x16 windows
    in the refiner's plain AND its shifted (rolled by 8) blocks.

    Tokens [17, 16 s + 7) on both axes (s = sqrt(windows)) touch windows 1..s unshifted and
    0..s-1 shifted; 16 windows is the whole canvas.
    """
    from focsam_onnx.engine.roi import token_mask

    side = math.isqrt(windows)
    if side * side != windows or not 1 <= side <= 4:
        raise ValueError(f"windows must be 1, 4, 9 or 16, got {windows}")
    if side == 4:
        return token_mask((0, 0, 1024, 1024))
    lo, hi = 17 * 16, (16 * side + 7) * 16  # token index -> pixel on the 1024 canvas
    return token_mask((lo, lo, hi, hi))


def refiner_feeds(windows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    values = (rng.standard_normal((1, 256, 64, 64), np.float32),
              rng.standard_normal((1, 1, 256), np.float32), window_token_mask(windows))
    return dict(zip(REFINER.input_names, values))


def synthetic_scene(hw: tuple[int, int] = SCENE_HW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured (H, W, 3) uint8 BGR image with a brighter ellipse, and its (H, W) uint8 mask
    (1 = object)."""
    rng = np.random.default_rng(seed)
    height, width = hw
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - 0.55 * height) / (0.3 * height)) ** 2 + \
        ((xx - 0.45 * width) / (0.25 * width)) ** 2 <= 1.0
    image = rng.integers(0, 160, (height, width, 3), dtype=np.uint8)
    image[inside] += np.array([40, 80, 90], np.uint8)
    return image, inside.astype(np.uint8)


def _decoder_key(prefix: str, n: int) -> str:
    return f"{prefix}_{n}_click" + ("s" if n > 1 else "")


def _refiner_key(prefix: str, k: int) -> str:
    return f"{prefix}_{k}_window" + ("s" if k > 1 else "")


# ---------------------------------------------------------------- stage processes


def _ort_options(threads: int):
    """Baseline graphs get the options our decoder and refiner get."""
    from focsam_onnx.engine.model_dir import session_options

    return session_options(threads)


def _graph_session(s: Settings, spec):
    from focsam_onnx.engine.model_dir import graph_session

    return graph_session(Path(s.model_dir) / spec.filename, spec, s.threads)


def encoder_stages(s: Settings) -> dict:
    """preprocess (numpy, the synthetic image) and encoder (the graph alone)."""
    from focsam_onnx.engine.preprocess import preprocess

    image, _ = synthetic_scene()
    out = {"preprocess": measure(lambda: preprocess(image), s.warmup, s.repeats)}
    session = _graph_session(s, ENCODER)
    feeds = {ENCODER.input_names[0]: preprocess(image)[0]}
    out["encoder"] = measure(lambda: session.run(None, feeds), s.warmup, s.repeats)
    out["encoder"]["process_peak_mb"] = system_info.process_peak_mb()
    return out


def decoder_stages(s: Settings) -> dict:
    session, rng = _graph_session(s, DECODER), np.random.default_rng(s.seed)
    out = {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        out[_decoder_key("decoder", n)] = measure(lambda f=feeds: session.run(None, f),
                                                  s.warmup, s.repeats)
    return out


def refiner_stages(s: Settings) -> dict:
    from focsam_onnx.engine.roi import selected_windows

    session, rng = _graph_session(s, REFINER), np.random.default_rng(s.seed)
    out = {}
    for k in REFINER_WINDOWS:
        feeds = refiner_feeds(k, rng)
        entry = measure(lambda f=feeds: session.run(None, f), s.warmup, s.repeats)
        mask = feeds[REFINER.input_names[2]]
        entry["windows_plain"] = int(selected_windows(mask).size)
        entry["windows_shifted"] = int(selected_windows(mask, shift=8).size)
        out[_refiner_key("refiner", k)] = entry
    return out


def _run_session(engine, encoded, gt: np.ndarray, seed: int) -> tuple[float, list[dict]]:
    """One object, SESSION_CLICKS simulated clicks; returns (timed seconds, per-step timings).

    Only `ClickSession.step` is timed (clicks, refiner, decoder, pre/post-processing); the click
    simulator's distance transforms stand in for a user and are not.
    """
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.clicker import next_click

    session, rng = ClickSession(engine, encoded), random.Random(seed)
    pred, clicks, seconds, steps = np.zeros_like(gt), [], 0.0, []
    for _ in range(SESSION_CLICKS):
        click = next_click(pred, gt, clicks, rng)
        start = time.perf_counter()
        result = session.step(click)
        wall = time.perf_counter() - start
        seconds += wall
        steps.append({**result.timings_ms, "wall": wall * 1000.0})
        pred = result.mask.astype(np.uint8)
        clicks += [click] if click is not None else []
    return seconds, steps


def _breakdown(steps: list[dict]) -> dict:
    """Median ms per click of each part of a step; the refiner's parts on the step that ran it."""
    def median(key: str) -> float:
        return float(np.median([st[key] for st in steps if key in st]))

    # The wall time encloses the timed parts, so this is >= 0; the floor keeps a tie positive.
    overhead = [st["wall"] - st["total"] for st in steps]
    return {"decode": median("decode"), "postprocess": median("postprocess"),
            "coarse_decode_once": median("coarse_decode"), "refine_once": median("refine"),
            "other": max(float(np.median(overhead)), 1e-6), "step_wall": median("wall")}


def session_stages(s: Settings) -> dict:
    """Cold open (encoder), reopen from the disk cache, and SESSION_CLICKS-click sessions."""
    from focsam_onnx.engine.cache import EmbeddingCache
    from focsam_onnx.engine.runtime import FocSAMEngine

    image, gt = synthetic_scene()
    cache_dir = Path(tempfile.mkdtemp(prefix="focsam-bench-emb-"))
    try:
        engine = FocSAMEngine.open(s.model_dir, s.threads, cache_dir=cache_dir)
        encoded = None

        def cold_open() -> None:
            nonlocal encoded
            encoded = engine.open_image(image)

        # Once: a second cold open would need another image or an emptied cache.
        out = {"session_open_image": measure(cold_open, 0, 1)}
        fresh = []

        def reopen() -> None:
            fresh.append(FocSAMEngine(engine.model, EmbeddingCache(1, cache_dir)).open_image(image))

        out["session_reopen_disk_cache"] = measure(reopen, s.warmup, s.repeats)
        if not all(e.from_cache for e in fresh):
            raise RuntimeError("reopening the image missed the disk cache")
        out["session_interaction_per_click"] = _interaction(engine, encoded, gt, s)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def _interaction(engine, encoded, gt: np.ndarray, s: Settings) -> dict:
    system_info.reset_peak_rss()
    rss_at_start = system_info.current_rss_mb()
    for i in range(s.warmup):
        _run_session(engine, encoded, gt, seed=1000 + i)
    per_click, steps = [], []
    for i in range(s.repeats):
        seconds, session_steps = _run_session(engine, encoded, gt, seed=i)
        per_click.append(seconds / SESSION_CLICKS)
        steps += session_steps
    return {**summarize(per_click), "peak_mb": system_info.peak_rss_mb(),
            "rss_at_start_mb": rss_at_start, "clicks_per_session": SESSION_CLICKS,
            "breakdown_ms": _breakdown(steps)}


def sam_decoder_stages(s: Settings, sam_decoder: str) -> dict:
    """The official SAM ONNX decoder on the same inputs as ours, orig_im_size (1024, 1024)."""
    out = _sam_decoder_timings(s, sam_decoder)
    for n, ratio in _interleaved_decoder_ratios(s, sam_decoder).items():
        out[_decoder_key("sam_onnx_decoder", n)]["interleaved_ours_over_this"] = ratio
    return out


def _sam_decoder_timings(s: Settings, sam_decoder: str) -> dict:
    import onnxruntime as ort

    from focsam_onnx.bench.baselines import sam_decoder_feeds

    session = ort.InferenceSession(sam_decoder, _ort_options(s.threads),
                                   providers=["CPUExecutionProvider"])
    rng, out = np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = sam_decoder_feeds(decoder_feeds(n, rng))
        entry = measure(lambda f=feeds: session.run(None, f), s.warmup, s.repeats)
        entry["note"] = "4 masks, upsampled in-graph to 1024x1024 (orig_im_size)"
        out[_decoder_key("sam_onnx_decoder", n)] = entry
    return out


def _interleaved_decoder_ratios(s: Settings, sam_decoder: str) -> dict[int, float]:
    """Median over pairs of (our decoder's time / segment-anything's), the two run back to back.

    Stages run minutes apart, and this shared machine drifts by up to a quarter in that time;
    timing the two graphs in alternation on the same feeds cancels the drift. Neither session
    spins, so the idle one does not steal the busy one's cores.
    """
    import onnxruntime as ort

    from focsam_onnx.bench.baselines import sam_decoder_feeds
    from focsam_onnx.engine.model_dir import graph_session, session_options

    ours = graph_session(Path(s.model_dir) / DECODER.filename, DECODER, s.threads,
                         spinning=False)
    theirs = ort.InferenceSession(sam_decoder, session_options(s.threads, spinning=False),
                                  providers=["CPUExecutionProvider"])
    rng, ratios = np.random.default_rng(s.seed), {}
    for n in DECODER_CLICKS:
        feeds = decoder_feeds(n, rng)
        pair = ((ours, feeds), (theirs, sam_decoder_feeds(feeds)))
        for _ in range(s.warmup):
            for session, f in pair:
                session.run(None, f)
        samples = []
        for _ in range(2 * s.repeats):
            ms = []
            for session, f in pair:
                start = time.perf_counter()
                session.run(None, f)
                ms.append(time.perf_counter() - start)
            samples.append(ms[0] / ms[1])
        ratios[n] = float(np.median(samples))
    return ratios


def torch_stages(s: Settings) -> dict:
    """Our torch modules in eager mode (the export wrappers, weights of `s.seed`)."""
    import torch

    from focsam_onnx.config import get_variant
    from focsam_onnx.export.wrappers import DecoderGraph, EncoderGraph, RefinerGraph
    from focsam_onnx.models.focsam import build_model

    torch.set_num_threads(s.threads)
    model = build_model(get_variant(s.variant), seed=s.seed)
    out, rng = {}, np.random.default_rng(s.seed)
    with torch.inference_mode():
        out["torch_encoder"] = _torch_encoder_stage(EncoderGraph(model), s)
        del model.backbone  # the decoder and refiner never need the ViT
        decoder, refiner = DecoderGraph(model), RefinerGraph(model)
        for n in DECODER_CLICKS:
            args = [torch.from_numpy(v) for v in decoder_feeds(n, rng).values()]
            out[_decoder_key("torch_decoder", n)] = measure(lambda a=args: decoder(*a),
                                                            s.warmup, s.repeats)
        for k in REFINER_WINDOWS:
            args = [torch.from_numpy(v) for v in refiner_feeds(k, rng).values()]
            out[_refiner_key("torch_refiner", k)] = measure(lambda a=args: refiner(*a),
                                                            s.warmup, s.repeats)
    return out


def _torch_encoder_stage(encoder, s: Settings) -> dict:
    import torch

    from focsam_onnx.engine.preprocess import preprocess

    image = torch.from_numpy(preprocess(synthetic_scene()[0])[0])
    entry = measure(lambda: encoder(image), s.warmup, s.repeats)
    return {**entry, "process_peak_mb": system_info.process_peak_mb()}


def proxy_stages(s: Settings, proxy_path: str, depth: int) -> dict:
    """The SimpleClick ViT-H proxy in onnxruntime, once per click."""
    import onnxruntime as ort

    from focsam_onnx.bench.simpleclick_proxy import INPUT_NAME, ProxyConfig, proxy_parameters

    cfg = ProxyConfig(depth=depth)
    session = ort.InferenceSession(proxy_path, _ort_options(s.threads),
                                   providers=["CPUExecutionProvider"])
    image = np.random.default_rng(s.seed).standard_normal(
        (1, 3, cfg.image_size, cfg.image_size), np.float32)
    entry = measure(lambda: session.run(None, {INPUT_NAME: image}), s.warmup, s.repeats)
    entry.update({"process_peak_mb": system_info.process_peak_mb(), "reduced": cfg.reduced,
                  "depth": cfg.depth, "embed_dim": cfg.embed_dim, "input_size": cfg.image_size,
                  "tokens": cfg.tokens, "parameters": proxy_parameters(Path(proxy_path).parent)})
    entry["note"] = ("plain ViT backbone, global attention, once per click: a lower bound on "
                     "SimpleClick's per-click cost (click-map embedding, head and zoom-in omitted)")
    if cfg.reduced:
        entry["note"] += f"; REDUCED to depth {cfg.depth} (--quick), not ViT-H's 32"
    return {"simpleclick_vit_h_proxy": entry}


# ---------------------------------------------------------------- exports (cached)


def export_focsam(variant: str, seed: int, out_dir: str) -> None:
    from focsam_onnx.config import get_variant
    from focsam_onnx.export.exporter import export_model
    from focsam_onnx.models.focsam import build_model

    export_model(build_model(get_variant(variant), seed=seed), out_dir,
                 _export_source(variant, seed))


def export_sam_decoder(out_dir: str, seed: int) -> str:
    from focsam_onnx.bench.baselines import cached_sam_onnx_decoder

    return str(cached_sam_onnx_decoder(out_dir, seed))


def export_simpleclick_proxy(out_dir: str, depth: int, seed: int) -> str:
    from focsam_onnx.bench.simpleclick_proxy import ProxyConfig, export_proxy

    return str(export_proxy(out_dir, ProxyConfig(depth=depth), seed))


def _export_source(variant: str, seed: int) -> Source:
    """What a cached export was made from, including the code that made its graphs: an export
    from older model or exporter code is stale even with the same variant and seed."""
    import hashlib

    package = Path(system_info.__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*package.glob("models/*.py"), *package.glob("export/*.py")]):
        digest.update(path.read_bytes())
    return Source("random-init", variant=variant, seed=seed, code=digest.hexdigest()[:16])


def focsam_model_dir(cache_dir: Path, variant: str, seed: int) -> Path:
    """`cache_dir/<variant>-seed<seed>`, exported (in a subprocess) unless its manifest is valid."""
    from focsam_onnx.engine.model_dir import ModelDirError, read_manifest, verify_files

    out_dir = cache_dir / f"{variant}-seed{seed}"
    try:
        manifest = read_manifest(out_dir)
        verify_files(out_dir, manifest, hash_files=False)
        if manifest.source == _export_source(variant, seed) and "refiner" in manifest.graphs:
            return out_dir
    except ModelDirError:
        pass
    (out_dir / "manifest.json").unlink(missing_ok=True)
    log.info("exporting random-init %s to %s (first use; cached afterwards)", variant, out_dir)
    in_subprocess(export_focsam, variant, seed, str(out_dir))
    return out_dir


# ---------------------------------------------------------------- subprocesses


def _child(conn, fn: Callable, args: tuple) -> None:
    warnings.simplefilter("ignore")  # exporter deprecation chatter; results are checked
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        reply = ("ok", fn(*args))
    except BaseException:  # report anything, KeyboardInterrupt included, to the parent
        reply = ("error", traceback.format_exc())
    conn.send(reply)
    conn.close()


def in_subprocess(fn: Callable, *args: Any) -> Any:
    """Run `fn(*args)` in a fresh (spawned) Python process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args), daemon=True)
    proc.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{fn.__name__} died in its subprocess with exit code "
                           f"{proc.exitcode} (killed for memory?)") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in its subprocess:\n{payload}")
    return payload


# ---------------------------------------------------------------- ratios and report


def _p50(entries: dict, key: str) -> float:
    return entries[key]["p50_ms"]


def compute_ratios(stages: dict, baselines: dict) -> dict:
    """Ratios of p50 times (ours / theirs); per-count ratios are averaged over counts."""
    def mean_ratio(ours: str, theirs: str, counts: tuple[int, ...], key) -> float:
        return float(np.mean([_p50(stages, key(ours, c)) / _p50(baselines, key(theirs, c))
                              for c in counts]))

    interleaved = [baselines[_decoder_key("sam_onnx_decoder", n)]["interleaved_ours_over_this"]
                   for n in DECODER_CLICKS]
    return {
        "decoder_vs_sam_onnx_decoder": mean_ratio("decoder", "sam_onnx_decoder",
                                                  DECODER_CLICKS, _decoder_key),
        "decoder_vs_sam_onnx_decoder_interleaved": float(np.mean(interleaved)),
        "interaction_vs_simpleclick_vit_h": _p50(stages, "session_interaction_per_click")
        / _p50(baselines, "simpleclick_vit_h_proxy"),
        "encoder_ort_vs_torch": _p50(stages, "encoder") / _p50(baselines, "torch_encoder"),
        "decoder_ort_vs_torch": mean_ratio("decoder", "torch_decoder", DECODER_CLICKS,
                                           _decoder_key),
        "refiner_ort_vs_torch": mean_ratio("refiner", "torch_refiner", REFINER_WINDOWS,
                                           _refiner_key),
        "refiner_4_windows_vs_decoder_click": _p50(stages, "refiner_4_windows")
        / _p50(stages, "decoder_5_clicks"),
    }


def evaluate_targets(stages: dict, ratios: dict) -> dict:
    measured = {**ratios,
                "encoder_peak_mb": max(stages["encoder"]["peak_mb"],
                                       stages["encoder"]["process_peak_mb"]),
                "reopen_cached_image_ms": _p50(stages, "session_reopen_disk_cache")}
    return {name: {"measured": measured[name], "target_max": bound, "unit": unit,
                   "met": measured[name] <= bound}
            for name, (bound, unit) in TARGETS.items()}


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _rows(entries: dict) -> list[str]:
    return [f"| {name} | {_fmt(e['p50_ms'])} | {_fmt(e['p90_ms'])} | {_fmt(e['peak_mb'])} |"
            for name, e in entries.items()]


def markdown_report(report: dict) -> str:
    m, cfg = report["machine"], report["settings"]
    head = "| stage | p50 ms | p90 ms | peak MB |\n|---|---:|---:|---:|"
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines = [
        f"## FocSAM CPU latency: {cfg['variant']} ({report['date']})", "",
        f"{m['cpu_model']}; {m['logical_cores']} logical cores, {m['threads']} threads used; "
        f"{cfg['warmup']} warm-up + {cfg['repeats']} timed runs per stage.", "",
        f"Versions: {versions}.", "",
        "### Our pipeline", "", head, *_rows(report["stages"]), "",
        "### Baselines (same run, machine and threads)", "", head, *_rows(report["baselines"]),
        "", "### Interaction per click, median ms of each part", "",
        "| part | ms |", "|---|---:|",
        *[f"| {k} | {_fmt(v)} |" for k, v in
          report["stages"]["session_interaction_per_click"]["breakdown_ms"].items()],
        "", "### Ratios (p50 ours / p50 theirs) and tracked targets", "",
        "| ratio | measured | target | met |", "|---|---:|---:|:---:|",
    ]
    targets = report["targets"]
    for name, value in report["ratios"].items():
        t = targets.get(name)
        bound = f"<= {t['target_max']:g}" if t else ""
        met = ("yes" if t["met"] else "no") if t else ""
        lines.append(f"| {name} | {value:.4g} | {bound} | {met} |")
    for name in ("encoder_peak_mb", "reopen_cached_image_ms"):
        t = targets[name]
        lines.append(f"| {name} | {_fmt(t['measured'])} | <= {t['target_max']:g} | "
                     f"{'yes' if t['met'] else 'no'} |")
    paper, ours = report["paper"], report["ratios"]["interaction_vs_simpleclick_vit_h"]
    lines += ["", f"Interaction per click vs SimpleClick-ViT-H proxy: {100 * ours:.3f}% "
              f"(paper: FocSAM {paper['focsam_s_per_click']} s vs SimpleClick-ViT-H "
              f"{paper['simpleclick_vit_h_s_per_click']} s per click = "
              f"{100 * paper['focsam_vs_simpleclick']:.1f}%)."]
    if report["baselines"]["simpleclick_vit_h_proxy"]["reduced"]:
        lines[-1] += " The proxy is REDUCED (--quick): this ratio is not comparable."
    lines.append("")
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


NOTES = (
    "peak MB: peak resident memory (MiB) of the stage's own process while the stage ran, "
    "loaded model, runtime and interpreter included.",
    "encoder: the graph alone; preprocess: the numpy preprocessing of a 480x640 image.",
    "session_interaction_per_click: a 20-click session's wall time after the embeddings exist "
    "(clicks, the refiner at click 2, decoder, post-processing to the image) divided by 20; "
    "session_open_image: one cold open (hash, preprocess, encoder, cache write); "
    "session_reopen_disk_cache: a new engine opening the same image from the disk cache.",
    "sam_onnx_decoder: segment-anything's SamOnnxModel (random weights); it also returns 4 masks "
    "upsampled to orig_im_size 1024x1024 in-graph, ours returns one 256x256 logit map.",
    "decoder_vs_sam_onnx_decoder_interleaved: the two decoders timed back to back on the same "
    "feeds (median of per-pair ratios, no thread spinning), which cancels the machine's drift "
    "between stages that run minutes apart.",
    "simpleclick_vit_h_proxy: plain ViT-H at 448x448 with global attention, once per click, "
    "a lower bound on SimpleClick-ViT-H (head, click embedding and zoom-in omitted).",
    "torch_*: our export wrappers in torch eager mode (inference_mode) with the exported weights "
    "(random init of the same variant when --model is given).",
)


# ---------------------------------------------------------------- entry point


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "focsam-onnx" / "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", choices=VARIANT_NAMES, default=None,
                        help="random-init variant, exported into --cache-dir on first use "
                             "(default vit_h; tiny with --quick)")
    source.add_argument("--model", type=Path, help="an exported model directory instead")
    parser.add_argument("--threads", type=int, default=system_info.usable_cores(),
                        help="onnxruntime / torch intra-op threads (default: all usable "
                             "cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 10; 3 "
                        "with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="discarded runs first "
                        "(default 2; 1 with --quick)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny variant, few "
                        f"repeats, SimpleClick proxy reduced to depth {QUICK_PROXY_DEPTH}")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="where random-init exports and baseline graphs are kept "
                             f"(default: {default_cache_dir()})")
    parser.add_argument("--seed", type=int, default=0, help="random-init seed (default: 0)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def _resolve_model(args: argparse.Namespace, variant: str) -> tuple[Path, str]:
    """(model directory, variant) from --model, or the cached random-init export."""
    if args.model is None:
        return focsam_model_dir(args.cache_dir, variant, args.seed), variant
    from focsam_onnx.engine.model_dir import read_manifest

    manifest = read_manifest(args.model)
    if "refiner" not in manifest.graphs:
        raise ValueError(f"{args.model} is a plain-SAM export without a refiner graph; the "
                         "benchmark needs a FocSAM export")
    return args.model, manifest.variant


def run_benchmark(args: argparse.Namespace) -> dict:
    variant = args.variant or ("tiny" if args.quick else "vit_h")
    model_dir, variant = _resolve_model(args, variant)
    s = Settings(str(model_dir), variant, args.threads,
                 args.warmup if args.warmup is not None else (1 if args.quick else 2),
                 args.repeats if args.repeats is not None else (3 if args.quick else 10),
                 args.seed)
    depth = QUICK_PROXY_DEPTH if args.quick else 32
    log.info("preparing baseline graphs in %s", args.cache_dir)
    sam_decoder = in_subprocess(export_sam_decoder, str(args.cache_dir / "sam_onnx_decoder"),
                                s.seed)
    proxy = in_subprocess(export_simpleclick_proxy,
                          str(args.cache_dir / f"simpleclick_proxy-depth{depth}"), depth, s.seed)
    stages, baselines = {}, {}
    for name, fn, extra, into in (
            ("encoder + preprocess", encoder_stages, (), stages),
            ("decoder", decoder_stages, (), stages),
            ("refiner", refiner_stages, (), stages),
            ("20-click session", session_stages, (), stages),
            ("segment-anything ONNX decoder", sam_decoder_stages, (sam_decoder,), baselines),
            ("torch eager", torch_stages, (), baselines),
            ("SimpleClick ViT-H proxy", proxy_stages, (proxy, depth), baselines)):
        start = time.perf_counter()
        into.update(in_subprocess(fn, s, *extra))
        log.info("measured %s (%.0f s)", name, time.perf_counter() - start)
    ratios = compute_ratios(stages, baselines)
    return {
        "date": system_info.now_iso(),
        "machine": system_info.machine_info(s.threads),
        "versions": system_info.library_versions(),
        "settings": {**asdict(replace(s, model_dir=str(model_dir))), "quick": args.quick,
                     "random_init": args.model is None, "scene_hw": list(SCENE_HW),
                     "peak_method": system_info.peak_method()},
        "stages": stages,
        "baselines": baselines,
        "ratios": ratios,
        "targets": evaluate_targets(stages, ratios),
        "paper": PAPER,
        "notes": list(NOTES),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the benchmark, print the tables, write --json."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:  # the CLI configures logging itself
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        report = run_benchmark(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
